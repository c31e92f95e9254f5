"""`generate`'s prompt from a file, from stdin and from @FILE; exactly one source, one-line errors."""

import json

import pytest

from test_cli import model_dir, run_cli  # noqa: F401  (the tiny model fixture)

PROMPT = "the cat sat on the mat the cat sat"


def tokens_for(model_dir, *args, input=None):
    res = run_cli("generate", "-m", str(model_dir), "--max-tokens", "6", "--json", *args, input=input)
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    return payload["prompt_tokens"], payload["tokens"]


def test_file_stdin_and_at_file_give_the_same_prompt_as_the_argument(model_dir, tmp_path):
    (tmp_path / "prompt.txt").write_text(PROMPT + "\n")  # one final newline is dropped
    expected = tokens_for(model_dir, "-p", PROMPT)
    assert tokens_for(model_dir, "--prompt-file", str(tmp_path / "prompt.txt")) == expected
    assert tokens_for(model_dir, "-p", "-", input=PROMPT + "\n") == expected
    assert tokens_for(model_dir, "-p", f"@{tmp_path / 'prompt.txt'}") == expected


def test_a_prompt_longer_than_a_shell_argument(model_dir, tmp_path):
    long = " ".join(["hello world the cat"] * 40000)  # 640 kB: more than Linux's 128 kB per argument
    (tmp_path / "long.txt").write_text(long)
    res = run_cli("generate", "-m", str(model_dir), "--prompt-file", str(tmp_path / "long.txt"), "--max-tokens", "2")
    assert res.returncode != 0 and "context" in res.stderr and "Traceback" not in res.stderr  # read, then refused: too long


def test_double_at_is_a_literal_at(model_dir):
    from mlx_specdec.tokenizer import Tokenizer

    prompt_ids, _ = tokens_for(model_dir, "--raw", "-p", "@@hello world")
    assert prompt_ids == Tokenizer(model_dir).encode("@hello world", add_special_tokens=True)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "exactly one of --prompt"),
        (["-p", "hi", "--prompt-file", "x.txt"], "exactly one of --prompt"),
        (["-p", "@/nonexistent/prompt.txt"], "prompt file not found: /nonexistent/prompt.txt (to send text starting with @, write @@)"),
        (["--prompt-file", "/nonexistent/p.txt"], "prompt file not found"),
        (["--prompt-file", "/"], "is a directory"),
        (["-p", "-"], "the prompt is empty"),
    ],
)
def test_bad_prompt_sources_are_one_line(model_dir, args, message):
    res = run_cli("generate", "-m", str(model_dir), "--max-tokens", "2", *args, input="")
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert res.returncode != 0 and len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr
