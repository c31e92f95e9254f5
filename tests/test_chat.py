"""`mlx-specdec chat`: the real process in a pseudo-terminal, cache reuse across turns, piped input."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from mlx_specdec.chat import ChatEngine, Conversation
from mlx_specdec.drafters import make_drafter
from mlx_specdec.errors import UserError
from mlx_specdec.generate import Session
from mlx_specdec.loader import load
from tiny_dir import write_tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x01\x02\r]")
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-HJKf]")


def tiny_chat_model(path: Path, context: int = 8192) -> Path:
    """The tiny model directory, with EOS (<|im_end|>, id 2) never the greedy choice: answers run
    to --max-tokens, so a long one is surely still streaming when Ctrl-C comes."""
    model_dir = write_tiny_model_dir(path)
    weights = mx.load(str(model_dir / "model.safetensors"))
    weights["model.embed_tokens.weight"][2] = 0.0  # tied embeddings: EOS's logit is 0, below the largest
    mx.save_safetensors(str(model_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": context}))
    return model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_chat_model(tmp_path_factory.mktemp("chat") / "model")


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, MLX_SPECDEC_NO_BLAS_REEXEC="1", MLX_SPECDEC_HISTORY_DIR=str(tmp_path / "history"),
                TERM="xterm-256color", COLUMNS="120", LINES="40")


def default_ctrl_c():
    """In the chat's process: Ctrl-C interrupts, as in a user's terminal. (A test run started as a
    background job ignores SIGINT, and an ignored signal stays ignored across exec, so Python would
    install no KeyboardInterrupt handler and the test's Ctrl-C would be lost.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a blocked signal stays blocked across exec too


def test_chat_in_a_terminal(model_dir, env, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, [str(ROOT / "cli.py"), "chat", "-m", str(model_dir), "--method", "ar",
                                           "--max-tokens", "6", "--show-drafts"],
                          env=env, cwd=str(tmp_path), dimensions=(40, 120), encoding="utf-8", timeout=60,
                          preexec_fn=default_ctrl_c)
    transcript = []

    def send(line, *expect):
        child.sendline(line)
        for pattern in expect:
            child.expect(pattern)
            transcript.append(child.before + child.after)

    child.expect("you>")
    send("hi", "tau 1.00", "you>")
    send("/method pld", "method: pld", "you>")
    send("hello world", r"pld · [0-9.]+ tok/s · tau", "you>")
    send("/max-tokens 5000")
    child.expect("you>")
    child.sendline("the cat sat")
    child.expect("tok/s")  # the live status line: the answer is streaming
    child.sendintr()
    child.expect(r"interrupted: the partial answer is kept")
    send("/max-tokens 6", "you>")
    send("what is the cat", "tau", "you>")
    send("/bogus", "unknown command '/bogus': type /help", "you>")
    send("/save saved.json", "saved 8 messages", "you>")
    send("/reset", "new conversation", "you>")
    send("/load saved.json", r"loaded saved\.json: 8 messages", "you>")
    child.sendintr()  # Ctrl-C twice in a row at the prompt exits cleanly
    child.expect("Ctrl-C again")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before

    saved = json.loads((tmp_path / "saved.json").read_text())
    roles = [m["role"] for m in saved["messages"]]
    assert roles == ["user", "assistant"] * 4
    assert [m["content"] for m in saved["messages"][0::2]] == ["hi", "hello world", "the cat sat", "what is the cat"]
    assert [bool(m.get("interrupted")) for m in saved["messages"]] == [False] * 5 + [True] + [False] * 2
    assert saved["settings"]["method"] == "pld" and saved["settings"]["max_tokens"] == 6
    assert {"temp", "system"} <= saved["settings"].keys()
    text = " ".join(ANSI.sub("", "".join(transcript)).split())
    for answer in saved["messages"][1::2]:
        assert " ".join(answer["content"].split()) in text  # every answer was shown (the loaded transcript too)
    history = sorted((tmp_path / "history").glob("*.json"), key=lambda p: p.stat().st_mtime)
    assert len(history) == 2  # /reset starts a new history file; the loaded conversation went there
    assert [json.loads(h.read_text())["messages"] for h in history] == [saved["messages"]] * 2


def test_chat_at_80_columns_explains_itself(model_dir, env, tmp_path):
    """The status line's legend, /settings, /draft-model, the max-tokens mark, Ctrl-C after an
    answer (clears the line), /save into a missing folder, a /load transcript wrapped at words, at
    80 columns (no printed line longer: the terminal would cut it mid-word), then --resume."""
    pexpect = pytest.importorskip("pexpect")
    env = dict(env, COLUMNS="80")
    child = pexpect.spawn(sys.executable, [str(ROOT / "cli.py"), "chat", "-m", str(model_dir), "--method", "pld",
                                           "--max-tokens", "40"],
                          env=env, cwd=str(tmp_path), dimensions=(40, 80), encoding="utf-8", timeout=60,
                          preexec_fn=default_ctrl_c)
    shown = []

    def send(line, *expect):
        child.sendline(line)
        for pattern in expect:
            child.expect(pattern)
            shown.append(child.before + child.after)

    child.expect("you>")
    long_message = " ".join(["the cat sat on the mat"] * 8)
    send(long_message, r"\(cut at max tokens: 40;", "tau", "N% of drafts accepted: the share of drafted tokens the model kept", "you>")
    send("hi", "cut at max tokens", "you>")
    assert "share of drafted tokens" not in shown[-1]  # the legend is shown once
    send("/settings", r"method pld · temperature 0 \(greedy\)", r"max tokens 40 · draft model none", "you>")
    send("/method draft-model", "needs --draft-model", "you>")
    send(f"/draft-model {model_dir}", "draft model: ", "you>")
    send("/method draft-model", "method: draft-model", "you>")
    send("what is the cat", r"draft-model · [0-9.]+ tok/s", "you>")
    send("/settings", "method draft-model", "draft model " + re.escape(str(model_dir)[:20]), "you>")
    child.sendintr()  # one Ctrl-C right after an answer: the line is cleared, the chat goes on
    child.expect("Ctrl-C again or Ctrl-D to quit")
    send("/max-tokens 7", "max tokens: 7", "you>")
    send("/save missing/dir/chat.json", "cannot save to missing/dir/chat.json: the folder missing/dir", "you>")
    send("/save chat.json", "saved 6 messages", "you>")
    send("/load chat.json", "loaded chat.json: 6 messages", "you>")
    loaded = ANSI.sub("", shown[-1]).replace("\r", "")
    child.sendeof()  # Ctrl-D quits
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert not (tmp_path / "missing").exists()
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert [m.get("cut", False) for m in saved["messages"][1::2]] == [True] * 3
    screen = ANSI.sub("", CURSOR.sub("\n", "".join(shown)))  # cursor moves (Live redraws) end a line
    typed = [long_message, f"/draft-model {model_dir}"]  # the terminal wraps the echoed input itself
    lines = [l for l in screen.splitlines() if "you>" not in l and not any(l.strip() in t for t in typed)]
    assert max(len(l) for l in lines) <= 80, max(lines, key=len)
    user_lines = loaded[loaded.index("user: the cat"):loaded.index("assistant:")].splitlines()  # the long message
    assert len(user_lines) >= 2 and all(len(l) <= 80 for l in user_lines), user_lines
    assert all(set(l.split()) <= {"user:", "the", "cat", "sat", "on", "mat"} for l in user_lines), user_lines  # whole words

    resumed = subprocess.run([sys.executable, str(ROOT / "cli.py"), "chat", "-m", str(model_dir), "--resume"], input="/exit\n",
                             capture_output=True, text=True, env=env, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert "restored settings: method draft-model · temperature 0 (greedy)" in " ".join(resumed.stderr.split())
    assert "draft model " + str(model_dir) in resumed.stderr.replace("\n", "")  # a long path may be folded
    assert "max tokens 7" in resumed.stderr


def test_status_line_breaks_between_its_parts():
    from mlx_specdec.cli.chat_view import status_line
    from mlx_specdec.stats import RunStats

    stats = RunStats(new_tokens=500, produced=900, target_forwards=300, draft_s=0.5, verify_s=9.5, proposed=4000,
                     accepted=600, forward_tokens=4300, proposed_by_depth=[299] * 8, accepted_by_depth=[250, 180, 90, 50, 20, 6, 3, 1])
    parts = str(status_line("redrafter", stats, stats)).split(" · ")
    assert "15% of drafts accepted" in parts[3] and len(" · ".join(parts)) > 80
    for width in (40, 60, 80, 120):
        lines = str(status_line("redrafter", stats, stats, width)).splitlines()
        assert all(len(l) <= width for l in lines), (width, lines)
        assert [p for l in lines for p in l.split(" · ")] == parts  # every part whole, in order


def engine_for(model_dir, method="ar", max_tokens=8, **kwargs):
    loaded = load(model_dir, "float32")
    conversation = Conversation(settings=dict(method=method, temp=0.0, top_p=1.0, top_k=0, max_tokens=max_tokens))
    return ChatEngine(loaded, make_drafter(method), conversation, **kwargs), loaded


def answer(engine, text, steps=None):
    turn = engine.begin(text)
    stream = engine.stream(turn)
    for i, _ in enumerate(stream):
        if steps is not None and i + 1 >= steps:
            stream.close()
    return turn


def test_second_turn_prefills_only_the_new_message(model_dir):
    engine, loaded = engine_for(model_dir)
    first = answer(engine, "hi").generation
    engine.set_method("pld", make_drafter("pld"))  # switching method keeps the cache
    second = answer(engine, "hello world the cat").generation
    ids1, ans1, ids2 = first.prompt_ids, first.tokens, second.prompt_ids
    assert first.finish == "length" and ids2[: len(ids1) + len(ans1)] == ids1 + ans1  # the answer's own tokens
    # the cache held ids1 + ans1[:-1]: prefilled = the last answer token, end of turn, the new message
    new = loaded.tokenizer.encode("<|im_end|>\n<|im_start|>user\nhello world the cat<|im_end|>\n<|im_start|>assistant\n")
    assert engine.session.last_prefill_tokens == 1 + len(new) and ids2[-len(new) - 1 :] == [ans1[-1]] + new
    fresh = Session(loaded.model, loaded.max_context).generate(ids2, make_drafter("ar"), max_tokens=8, eos_ids=loaded.tokenizer.eos_ids)
    assert [t for step in fresh for t in step.tokens] == second.tokens
    assert engine.session.cache.offset == len(engine.session.cached)


def test_interrupted_answer_is_kept_and_the_cache_stays_consistent(model_dir):
    engine, loaded = engine_for(model_dir, method="pld", max_tokens=40)
    turn = answer(engine, "the cat sat on the mat", steps=3)
    assert turn.interrupted and engine.conversation.messages[-1]["interrupted"]
    assert engine.conversation.messages[-1]["content"] == turn.generation.text != ""
    assert engine.session.cache.offset == len(engine.session.cached)
    second = answer(engine, "hi").generation
    assert second.stats.prefill_tokens < len(second.prompt_ids) // 2
    fresh = Session(loaded.model).generate(second.prompt_ids, make_drafter("ar"), max_tokens=40, eos_ids=loaded.tokenizer.eos_ids)
    assert [t for step in fresh for t in step.tokens] == second.tokens


def test_context_overflow_drops_the_oldest_turns(tmp_path):
    engine, _ = engine_for(tiny_chat_model(tmp_path / "m", context=64), max_tokens=8)
    engine.conversation.system = "be brief"
    dropped = [answer(engine, "hello world the cat sat on the mat").dropped for _ in range(5)]
    assert dropped[0] == 0 and sum(dropped) > 0
    messages = engine.conversation.messages
    assert messages[0] == {"role": "system", "content": "be brief"} and len(messages) < 11
    with pytest.raises(UserError, match="context"):
        engine.begin(" ".join(["hello"] * 80))
    assert engine.conversation.messages == messages  # the refused message is not kept


def test_autosave_and_json_round_trip(model_dir, tmp_path):
    history = tmp_path / "h" / "chat.json"
    engine, _ = engine_for(model_dir, history_path=history)
    engine.conversation.system = "you are a cat"
    answer(engine, "hi")
    saved = Conversation.load(history)
    assert saved.messages == engine.conversation.messages and saved.system == "you are a cat"
    assert saved.settings["method"] == "ar" and saved.settings["max_tokens"] == 8
    assert not list(history.parent.glob(".*.tmp"))  # written through a temporary file, renamed
    (tmp_path / "bad.json").write_text('{"messages": [{"role": "robot"}]}')
    with pytest.raises(UserError, match="not a saved conversation"):
        Conversation.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('{"messages": [], "settings": {"temp": "hot"}}')
    with pytest.raises(UserError, match="'temp' should be a float"):
        Conversation.load(tmp_path / "bad.json")


def test_piped_input_answers_and_exits_0(model_dir, env):
    run = lambda *args, input: subprocess.run(  # noqa: E731
        [sys.executable, str(ROOT / "cli.py"), "chat", "-m", str(model_dir), "--max-tokens", "5", *args],
        input=input, capture_output=True, text=True, env=env, timeout=60)
    first = run(input="hi\n/exit\n")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() and "tok/s" in first.stderr and "Traceback" not in first.stderr
    again = run("--resume", input="/stats\n")  # end of input exits too
    assert again.returncode == 0, again.stderr
    shown = " ".join(again.stderr.split())  # (wrapped at words to the terminal's width)
    assert "resumed" in shown and "2 messages" in shown and "session statistics" in shown


def test_default_method_is_redrafter_where_a_head_ships_else_recycle():
    from mlx_specdec.drafters import default_method

    assert default_method(lambda: True) == "redrafter"
    assert default_method(lambda: False) == "recycle"
