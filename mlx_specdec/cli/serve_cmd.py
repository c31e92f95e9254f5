"""``mlx-specdec serve``: the OpenAI-compatible HTTP server (mlx_specdec/server/), one model per process."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from ..method_options import MethodOptions
from . import options as opts
from .common import build_drafter, console, load_target


@opts.with_method_options
def serve(
    model: opts.Model = None,
    method: Optional[str] = typer.Option(None, "--method", help="Default decoding method: ar, pld, draft-model, lookahead, recycle, redrafter, eagle, triforce (default: as chat: redrafter when a head ships for the model, else recycle); a request may pick another with its \"method\" field."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port (0: a free one)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="MLX_SPECDEC_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 (also from $MLX_SPECDEC_API_KEY)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="The model id clients send and /v1/models lists (default: the model directory's name)."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="New tokens per answer when a request sets no max_tokens."),
    temp: float = typer.Option(0.0, "--temp", help="Temperature when a request sets none (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling when a request sets no top_p."),
    top_k: int = typer.Option(0, "--top-k", help="Top-k when a request sets no top_k (0 = off)."),
    dtype: opts.Dtype = None,
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level (info shows each request)."),
    *,
    method_options: MethodOptions,
):
    """Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health)."""

    from ..drafters import METHODS, default_method
    from ..errors import UserError
    from ..sampling import SamplingParams
    from ..server import Engine, bind, create_app, serve as run_server

    params = SamplingParams(temperature=temp, top_p=top_p, top_k=top_k)
    if method is not None and method not in METHODS:
        raise UserError(f"unknown method {method!r} (choose from: {', '.join(METHODS)})")
    options = method_options.given()  # field name -> value; a request may override all but the model files
    sock = bind(host, port)  # before loading: a taken port fails at once
    loaded = load_target(model, dtype)

    def make_drafter(name, request_params, request_options):
        return build_drafter(name, loaded, request_params, MethodOptions.from_dict(request_options))

    def available(name):
        try:
            make_drafter(name, params, options)
            return True
        except (UserError, ImportError, KeyError):
            return False

    method = method or default_method(lambda: available("redrafter"))
    method_options.check(method)
    engine = Engine(loaded, make_drafter, method, options, temp, top_p, top_k, max_tokens, model_name)
    make_drafter(method, params, options)  # bad startup options fail here; a redrafter head measures its cost now
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    console.print(f"Serving [bold]{engine.model_id}[/] ({method}, {loaded.dtype}) at http://{shown}:{bound_port}/v1"
                  f"{'  (API key required)' if api_key else ''}  Ctrl-C stops")
    run_server(create_app(engine, api_key), sock, log_level)
    console.print("stopped")
    _exit_now()


def _exit_now() -> None:
    """End the process without running C++ static destructors.

    The worker thread ran MLX work; MLX's destructors at exit can then abort the process
    ("terminate called without an active exception", ml-explore/mlx#3126), turning a clean stop
    into exit code -6. Everything the server owns is closed by now, so nothing is lost.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
