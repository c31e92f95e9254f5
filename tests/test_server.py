"""`mlx-specdec serve`: a real server process on a loopback port, driven by the official `openai`
client and raw `httpx` requests, on the real default model (float32).

Greedy answers must equal `mlx-specdec generate --json` token for token (the server returns the
ids with vLLM's ``return_token_ids`` extension), for chat and raw completions, whole and streamed,
with ar and with speculative methods.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key"
QUESTION = "What is the capital of France?"
RAW = "The three primary colours are"
MAX_TOKENS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_ctrl_c():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # see tests/test_chat.py
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.fixture(scope="module")
def model_dir():
    from mlx_specdec.store import default_model_dir

    return default_model_dir()  # converted once per machine (CI: here, before any server starts)


def start_server(model_dir, log_path: Path, *args):
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "-m", str(model_dir), "--dtype", "float32",
                             "--port", str(port), *args], stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                            env=dict(os.environ), preexec_fn=default_ctrl_c)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"the server did not answer /health in 120 s: {log_path.read_text()}")


def stop_server(proc, timeout=20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("the server did not stop within 20 s of SIGTERM")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    proc, url = start_server(model_dir, log_path, "--method", "pld", "--api-key", KEY)
    yield url, log_path
    assert stop_server(proc) == 0, log_path.read_text()
    assert "stopped" in log_path.read_text()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


def generate_json(model_dir, prompt, *args):
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "generate", "-m", str(model_dir), "--dtype", "float32",
                          "-p", prompt, "--max-tokens", str(MAX_TOKENS), "--method", "ar", "--json", *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def chat_reference(model_dir):
    return generate_json(model_dir, QUESTION)


@pytest.fixture(scope="module")
def raw_reference(model_dir):
    return generate_json(model_dir, RAW, "--raw")


def extra(obj, name):
    return (obj.model_extra or {}).get(name)


def chat_stream(client, messages, **body):
    """(text, token ids, usage, prompt ids) of a streamed chat completion."""
    stream = client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=MAX_TOKENS,
                                            temperature=0, stream=True, stream_options={"include_usage": True},
                                            extra_body=dict(return_token_ids=True, **body))
    text, ids, usage, prompt_ids, finish = "", [], None, None, None
    for chunk in stream:
        prompt_ids = prompt_ids or extra(chunk, "prompt_token_ids")
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            ids += extra(choice, "token_ids") or []
            finish = choice.finish_reason or finish
    return text, ids, usage, prompt_ids, finish


def completion_stream(client, prompt, **body):
    stream = client.completions.create(model="smollm2-135m", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                       stream=True, extra_body=dict(return_token_ids=True, **body))
    text, ids = "", []
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.text or ""
            ids += extra(choice, "token_ids") or []
    return text, ids


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["smollm2-135m"]
    health = httpx.get(f"{server[0]}/health").json()  # no key needed
    assert health["status"] == "ok" and health["method"] == "pld" and health["rss_bytes"] > 0


@pytest.mark.parametrize("method", ["ar", "pld", "lookahead"])
def test_chat_equals_generate(client, chat_reference, method):
    resp = client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=MAX_TOKENS, temperature=0,
                                          extra_body=dict(method=method, return_token_ids=True))
    choice = resp.choices[0]
    assert extra(resp, "prompt_token_ids") == chat_reference["prompt_tokens"]
    assert extra(choice, "token_ids") == chat_reference["tokens"]
    assert choice.message.content == chat_reference["text"]
    assert resp.usage.completion_tokens == len(chat_reference["tokens"])
    speculative = extra(resp.usage, "speculative")
    assert speculative["method"] == method and speculative["tau"] >= 1.0
    assert speculative["prefill_tokens"] + speculative["reused_tokens"] == resp.usage.prompt_tokens


def test_chat_stream_equals_generate(client, chat_reference):
    text, ids, usage, prompt_ids, finish = chat_stream(client, [{"role": "user", "content": QUESTION}], method="pld")
    assert prompt_ids == chat_reference["prompt_tokens"]
    assert ids == chat_reference["tokens"] and text == chat_reference["text"]
    assert usage.completion_tokens == len(ids) and finish in ("stop", "length")


@pytest.mark.parametrize("stream", [False, True])
def test_completion_equals_generate(client, raw_reference, stream):
    if stream:
        text, ids = completion_stream(client, RAW, method="pld")
    else:
        resp = client.completions.create(model="smollm2-135m", prompt=RAW, max_tokens=MAX_TOKENS, temperature=0,
                                         extra_body=dict(method="pld", return_token_ids=True))
        text, ids = resp.choices[0].text, extra(resp.choices[0], "token_ids")
        assert extra(resp, "prompt_token_ids") == raw_reference["prompt_tokens"]
        assert resp.choices[0].finish_reason == "length"
    assert ids == raw_reference["tokens"] and text == raw_reference["text"]


def test_stop_string(client, raw_reference):
    word = raw_reference["text"].split()[3]
    resp = client.completions.create(model="smollm2-135m", prompt=RAW, max_tokens=MAX_TOKENS, temperature=0, stop=[word])
    assert resp.choices[0].text == raw_reference["text"][: raw_reference["text"].index(word)]
    assert resp.choices[0].finish_reason == "stop"


def test_follow_ups_reuse_the_cache(client):
    """Two follow-ups, each resending the history (as chat clients do), prefill only their new tokens."""
    def ask(messages):
        return client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=16, temperature=0,
                                              extra_body=dict(return_token_ids=True))

    messages = [{"role": "user", "content": "Name a colour."}]
    resp = ask(messages)
    for follow_up in ("And another one?", "Which of the two is darker?"):
        previous_prompt = resp.usage.prompt_tokens
        messages += [{"role": "assistant", "content": resp.choices[0].message.content}, {"role": "user", "content": follow_up}]
        resp = ask(messages)
        speculative = extra(resp.usage, "speculative")
        assert speculative["cache_reused"] and speculative["reused_tokens"] >= previous_prompt
        assert speculative["prefill_tokens"] == resp.usage.prompt_tokens - speculative["reused_tokens"]
    # the same request on a cold cache (another prompt in between) gives the same tokens
    client.completions.create(model="smollm2-135m", prompt="Unrelated text.", max_tokens=2)
    again = ask(messages)
    assert extra(again.choices[0], "token_ids") == extra(resp.choices[0], "token_ids")
    assert extra(again.usage, "speculative")["reused_tokens"] < speculative["reused_tokens"]


def test_two_concurrent_streams_both_complete(client, chat_reference, raw_reference):
    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as e:  # reported by the assertion below
            results[name] = e

    threads = [threading.Thread(target=run, args=("chat", lambda: chat_stream(client, [{"role": "user", "content": QUESTION}]))),
               threading.Thread(target=run, args=("raw", lambda: completion_stream(client, RAW, method="ar")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["chat"][:2] == (chat_reference["text"], chat_reference["tokens"]), results["chat"]
    assert results["raw"] == (raw_reference["text"], raw_reference["tokens"]), results["raw"]


def test_disconnect_mid_stream_stops_the_generation(http, client, raw_reference):
    before = http.get("/health").json()
    body = dict(prompt="1, 2, 3, 4, 5,", max_tokens=4000, stream=True, method="ar")
    with http.stream("POST", "/v1/completions", json=body) as resp:
        events = 0
        for line in resp.iter_lines():
            events += line.startswith("data:")
            if events >= 5:
                break  # closes the connection with 4000 tokens asked and a handful produced
    deadline = time.monotonic() + 5  # 4000 tokens would take minutes on a CPU
    while (health := http.get("/health").json())["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not health["busy"] and health["cancelled"] == before["cancelled"] + 1
    text, ids = completion_stream(client, RAW, method="pld")  # the next request, on a consistent cache
    assert ids == raw_reference["tokens"] and text == raw_reference["text"]


def error_of(resp, status):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("body, status, param", [
    ({"model": "smollm2-135m"}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}, 404, "model"),
    ({"messages": [{"role": "user", "content": "hi"}], "method": "magic"}, 400, "method"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
])
def test_bad_requests_get_openai_errors(http, body, status, param):
    assert error_of(http.post("/v1/chat/completions", json=body), status)["param"] == param


def test_malformed_json_and_unknown_route(http):
    error = error_of(http.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert "JSON" in error["message"]
    error_of(http.post("/v1/completions", json={"prompt": ["a", "b"]}), 400)
    error_of(http.get("/v1/nothing"), 404)


def test_prompt_longer_than_the_context(http):
    resp = http.post("/v1/completions", json={"prompt": "hello " * 9000, "max_tokens": 4})
    error = error_of(resp, 400)
    context, prompt = map(int, re.findall(r"\d+", error["message"]))
    assert error["code"] == "context_length_exceeded" and context == 8192 and prompt >= 9000


def test_api_key_is_enforced(server, http):
    url = server[0]
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert error_of(httpx.post(f"{url}/v1/chat/completions", json=body), 401)["code"] == "invalid_api_key"
    error_of(httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"}), 401)
    error_of(httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    assert http.post("/v1/chat/completions", json=body).status_code == 200  # and the server is still serving


def test_ctrl_c_mid_stream_stops_the_server(model_dir, tmp_path):
    proc, url = start_server(model_dir, tmp_path / "server.log", "--method", "ar")
    assert "http://127.0.0.1:" in (tmp_path / "server.log").read_text()  # loopback unless told otherwise
    try:
        with httpx.stream("POST", f"{url}/v1/completions", timeout=60,
                          json=dict(prompt="1, 2, 3,", max_tokens=4000, stream=True)) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    proc.send_signal(signal.SIGINT)
                    break
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopped" in (tmp_path / "server.log").read_text()
