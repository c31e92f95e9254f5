"""The server's app in process on a tiny random model (fast): answers equal the library's loop,
the request -> drafter options mapping, error JSON, the API key. The real process on the real
model is tests/test_server.py."""

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from mlx_specdec.cli.common import build_drafter  # noqa: E402
from mlx_specdec.drafters import make_drafter  # noqa: E402
from mlx_specdec.generate import Session  # noqa: E402
from mlx_specdec.loader import load  # noqa: E402
from mlx_specdec.method_options import MethodOptions  # noqa: E402
from mlx_specdec.sampling import SamplingParams  # noqa: E402
from mlx_specdec.server import Engine, create_app  # noqa: E402
from mlx_specdec.server.errors import APIError  # noqa: E402
from mlx_specdec.server.methods import request_method  # noqa: E402
from mlx_specdec.server.schemas import ChatRequest  # noqa: E402
from test_chat import tiny_chat_model  # noqa: E402

CONTEXT = 96


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load(tiny_chat_model(tmp_path_factory.mktemp("serve") / "model", context=CONTEXT), "float32")


def make_app(loaded, api_key=None, method="pld", **options):
    def factory(name, params, options):
        return build_drafter(name, loaded, params, MethodOptions.from_dict(options))

    return create_app(Engine(loaded, factory, method, options, max_tokens=8), api_key)


@pytest.fixture(scope="module")
def client(loaded):
    with TestClient(make_app(loaded)) as c:
        yield c


def reference(loaded, ids, max_tokens, method="ar", params=SamplingParams()):
    steps = Session(loaded.model, loaded.max_context).generate(ids, make_drafter(method), params, max_tokens,
                                                                 loaded.tokenizer.eos_ids)
    return [t for s in steps for t in s.tokens]


def test_request_method_overrides_the_server_options():
    body = ChatRequest(messages=[{"role": "user", "content": "hi"}], method="lookahead", ngram=4, window="auto")
    assert request_method(body, "pld", dict(num_draft=8, ngram=3)) == ("lookahead", dict(num_draft=8, ngram=4, window="auto"))
    assert request_method(ChatRequest(messages=[{"role": "user", "content": "hi"}]), "pld", {}) == ("pld", {})
    with pytest.raises(APIError) as e:
        request_method(ChatRequest(messages=[{"role": "user", "content": "hi"}], method="magic"), "pld", {})
    assert e.value.status == 400 and e.value.param == "method"
    with pytest.raises(APIError) as e:  # an option for another method: the CLI's one-line check, as a 400
        request_method(ChatRequest(messages=[{"role": "user", "content": "hi"}], beam_width=2, tree="dynamic"), "redrafter", {})
    assert e.value.status == 400 and "--beam-width" in e.value.message


@pytest.mark.parametrize("method", ["ar", "pld", "lookahead"])
def test_chat_and_completion_equal_the_loop(client, loaded, method):
    messages = [{"role": "user", "content": "the cat sat on the mat the cat"}]
    ids = loaded.tokenizer.chat_ids(messages)
    body = dict(messages=messages, max_tokens=12, method=method, return_token_ids=True)
    resp = client.post("/v1/chat/completions", json=body).json()
    assert resp["prompt_token_ids"] == ids
    assert resp["choices"][0]["token_ids"] == reference(loaded, ids, 12)
    assert resp["usage"]["speculative"]["method"] == method
    raw = "hello world the cat sat"
    raw_ids = loaded.tokenizer.encode(raw, add_special_tokens=True)
    got = client.post("/v1/completions", json=dict(prompt=raw, max_tokens=12, method=method, return_token_ids=True)).json()
    assert got["choices"][0]["token_ids"] == reference(loaded, raw_ids, 12)
    assert got["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("method", ["ar", "pld"])
def test_seeded_sampling_repeats_the_loop(client, loaded, method):
    """Drafters are built per request, so a seeded request is what a fresh run with that seed gives, every time."""
    prompt = "the cat sat on the mat the cat sat on the"
    ids = loaded.tokenizer.encode(prompt, add_special_tokens=True)
    expected = reference(loaded, ids, 16, method, SamplingParams(temperature=1.5, top_k=20, seed=7))
    body = dict(prompt=prompt, max_tokens=16, temperature=1.5, top_k=20, seed=7, method=method, return_token_ids=True)
    for _ in range(2):
        assert client.post("/v1/completions", json=body).json()["choices"][0]["token_ids"] == expected


def test_stream_is_the_same_answer_in_pieces(client, loaded):
    body = dict(messages=[{"role": "user", "content": "what is the cat"}], max_tokens=10, stream=True,
                return_token_ids=True, stream_options={"include_usage": True})
    whole = client.post("/v1/chat/completions", json={**body, "stream": False}).json()
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    ids = [t for c in chunks if c["choices"] for t in c["choices"][0].get("token_ids", [])]
    assert text == whole["choices"][0]["message"]["content"] and ids == whole["choices"][0]["token_ids"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(ids)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_errors_are_openai_json(client):
    def error(resp, status):
        assert resp.status_code == status, resp.text
        body = resp.json()["error"]
        assert set(body) == {"message", "type", "param", "code"}
        return body

    assert error(client.post("/v1/chat/completions", json={}), 400)["param"] == "messages"
    assert "JSON" in error(client.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"}), 400)["message"]
    assert error(client.post("/v1/chat/completions", json=dict(messages=[{"role": "user", "content": "hi"}], model="x")), 404)["code"] == "model_not_found"
    assert error(client.post("/v1/completions", json=dict(prompt="hi", top_k=-1)), 400)["param"] == "top_k"
    long = error(client.post("/v1/completions", json=dict(prompt="hello " * CONTEXT)), 400)
    assert long["code"] == "context_length_exceeded" and str(CONTEXT) in long["message"]
    # a drafter option that does not fit the method is the user's error, found on the worker
    assert error(client.post("/v1/completions", json=dict(prompt="hi", method="redrafter", tree="beam", tree_topk=2)), 400)["message"]
    assert client.get("/health").json()["busy"] is False
    assert client.post("/v1/completions", json=dict(prompt="hi", max_tokens=2)).status_code == 200


def test_api_key(loaded):
    with TestClient(make_app(loaded, api_key="k")) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer k"}).json()["data"][0]["id"] == "model"
        assert c.get("/health").status_code == 200


def test_draft_model_loads_once_and_is_lossless(loaded):
    from mlx_specdec.cli import common

    common._draft_models.clear()
    prompt = "the cat sat on the mat"
    expected = reference(loaded, loaded.tokenizer.encode(prompt, add_special_tokens=True), 12)
    with TestClient(make_app(loaded, method="draft-model", draft_model=str(loaded.path))) as c:
        for _ in range(2):
            body = dict(prompt=prompt, max_tokens=12, return_token_ids=True, num_draft=3)
            resp = c.post("/v1/completions", json=body).json()
            assert resp["choices"][0]["token_ids"] == expected
            assert resp["usage"]["speculative"]["method"] == "draft-model" and resp["usage"]["speculative"]["proposed"] > 0
    assert len(common._draft_models) == 1  # the weights loaded once, though each request built its drafter


def test_serve_command_errors_are_one_line(loaded):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    cli = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "serve", "-m", str(loaded.path)]
    env = dict(os.environ, MLX_SPECDEC_NO_BLAS_REEXEC="1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args, message in ((["--port", port], "cannot listen on 127.0.0.1:"), (["--method", "nope"], "unknown method 'nope'")):
            res = subprocess.run(cli + args, capture_output=True, text=True, env=env, timeout=60)
            assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
