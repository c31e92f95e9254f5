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
    from .convert_cmd import convert, pull
    from .generate_cmd import generate

    app.command()(generate)
    app.command()(convert)
    app.command()(pull)
    app.command()(bench)
    from .train_cmd import train_drafter

    app.command("train-drafter")(train_drafter)
    try:
        from .chat_cmd import chat
    except ImportError:
        chat = None
    if chat is not None:
        app.command()(chat)


_register()


def main() -> None:
    from ..errors import UserError
    from ..platform_setup import ensure_fast_blas
    from .common import console

    warning = ensure_fast_blas()  # may re-execute the process with OpenBLAS preloaded
    if warning:
        console.print(f"[yellow]note:[/] {warning}")
    try:
        app()
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
