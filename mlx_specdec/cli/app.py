"""``mlx-specdec``: the Typer application and its entry point."""

from __future__ import annotations

import sys

import typer

# Only what the README's Results measured (40 Spec-Bench prompts, 2-core CPU, float32, OpenBLAS).
HELP = ("Lossless speculative decoding on MLX: the same tokens as plain decoding, faster where drafts are "
        "accepted. Measured on a 2-core CPU (float32): redrafter (the default where a head ships: its tree "
        "merged with recycle's) 1.72x median over 40 Spec-Bench prompts, from 1.18x (rag) to 3.04x "
        "(extraction); recycle (no weights, any model) 1.59x; see the README's Results.")

app = typer.Typer(
    name="mlx-specdec",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _flags_take_no_value():
    """Typer's help shows ``<bool>`` after flags such as ``--json``, which take no value: show nothing."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)  # (Typer >= 0.29; older ones show no type)
    if shown is not None:
        TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else shown(self, ctx)


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


_flags_take_no_value()
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
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError (vendored by Typer >= 0.29, so found this way)
    try:
        code = app(standalone_mode=False)  # click's usage errors come here, to be printed as one line
    except usage_error as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `mlx-specdec` alone: the help
            e.show()
        else:
            console.print(f"[bold red]error:[/] {escape(e.format_message())} (--help for the options)")
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except UserError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
