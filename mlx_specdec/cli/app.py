"""``mlx-specdec``: the Typer application and its entry point."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="mlx-specdec",
    help="Lossless speculative decoding on MLX: the same tokens as plain decoding, several times faster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register():
    from .bench_cmd import bench
    from .chat_cmd import chat
    from .convert_cmd import convert, pull
    from .generate_cmd import generate
    from .serve_cmd import serve
    from .train_cmd import train_drafter

    for command in (chat, generate, serve, bench, convert, pull):
        app.command()(command)
    app.command("train-drafter")(train_drafter)


_register()


def _first_time(what: str) -> bool:
    """True the first time ``what`` is asked on this machine (a marker in the user cache dir)."""
    from pathlib import Path

    from platformdirs import user_cache_dir

    marker = Path(user_cache_dir("mlx-specdec")) / f"{what}.shown"
    if marker.exists():
        return False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass
    return True


def main() -> None:
    from rich.markup import escape

    from ..errors import UserError
    from ..platform_setup import ensure_fast_blas
    from .common import console

    warning = ensure_fast_blas()  # may re-execute the process with OpenBLAS preloaded
    if warning and _first_time("blas-warning"):
        console.print(f"[yellow]note:[/] {warning}")
    try:
        app()
    except UserError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
