"""``mlx-specdec bench``: Spec-Bench-style runs of every method against ar (and mlx-lm), with a
progress bar, a summary table, a JSON file and a bar chart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from ..method_options import MethodOptions
from . import options as opts
from .common import build_drafter, console, load_target, out, resolve_model


@opts.with_method_options
def bench(
    model: opts.Model = None,
    methods: str = typer.Option("ar,pld", "--methods", help="Comma-separated methods; ar (the baseline) always runs first. redrafter:beam and redrafter:dynamic run both tree shapes in one run."),
    prompts: list[Path] = typer.Option([], "--prompts", help="JSONL of {question_id, category, turns} (repeatable; default: the Spec-Bench dev split, else the packaged prompts)."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated categories to keep."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Prompts in total, taken round-robin across categories (every category gets its share)."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="New tokens per turn."),
    context: Optional[int] = typer.Option(None, "--context", min=1, help="Long-document prompts (default: ../shared/data/longctx) with each document cut so that prompt + --max-tokens fit in N tokens (TriForce's benchmark)."),
    temp: float = typer.Option(0.0, "--temp", help="Sampling temperature; 0 = greedy (the only mode where outputs are compared)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass."),
    top_k: int = typer.Option(0, "--top-k", help="Keep only the k most likely tokens (0 = off)."),
    min_p: opts.MinP = 0.0,
    seed: opts.Seed = None,
    dtype: opts.Dtype = None,
    peers: Optional[str] = typer.Option(None, "--peers", help="Other implementations to run on the same prompts: mlx-lm."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the results JSON here (rewritten after every row)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG bar chart of speedup and tau (needs mlx-specdec\\[plot])."),
    resume: bool = typer.Option(False, "--resume", help="Continue the --out file: skip the rows it already has."),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="Exit 0 even if a method's greedy output differs from ar's."),
    *,
    method_options: MethodOptions,
):
    """Benchmark decoding methods on Spec-Bench-style prompts: speedup over ar, tau, tokens/s, losslessness."""
    from .. import bench as lib
    from .. import bench_report as report
    from ..generate import Session
    from ..sampling import SamplingParams

    params = SamplingParams(temperature=temp, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed)
    names = [lib.BASELINE] + [m for m in dict.fromkeys(_split(methods)) if m != lib.BASELINE]
    peer_names = list(dict.fromkeys(_split(peers)))
    for p in peer_names:
        if p not in lib.PEERS:
            raise UserError(f"unknown peer {p!r} (choose from: {', '.join(lib.PEERS)})")
    for name in names:
        _method_variant(name)
    method_options.check(*names, *(["draft-model"] if "mlx-lm" in peer_names else []))  # mlx-lm-spec drafts too
    if resume and out_path is None:
        raise UserError("--resume needs --out FILE (the results file to continue)")
    if plot is not None:
        _matplotlib()  # fail before the run, not after it
    if context is not None and not prompts:
        from ..long_context import default_longctx_file

        prompts = [default_longctx_file()]
    selected = lib.select(lib.read_prompts(prompts or [lib.default_prompt_file()]), _split(categories), limit)
    if not selected:
        raise UserError("no prompts selected")

    loaded = load_target(model, dtype)
    if context is not None:
        from ..long_context import cut_to_context

        if loaded.max_context and context > loaded.max_context:
            raise UserError(f"--context {context} is longer than the model's context ({loaded.max_context} tokens)")
        if method_options.kv_budget is not None and method_options.kv_budget >= context - max_tokens:
            raise UserError(f"--budget {method_options.kv_budget} is not smaller than the context ({context - max_tokens} prompt tokens)")
        selected = [cut_to_context(p, loaded.tokenizer, context, max_tokens) for p in selected]
    settings = dict(model=str(loaded.path), dtype=loaded.dtype, max_tokens=max_tokens, temperature=temp, top_p=top_p,
                    top_k=top_k, min_p=min_p, seed=seed, methods=names, peers=peer_names, draft_model=method_options.draft_model, num_draft=method_options.num_draft,
                    prompts=[str(p) for p in (prompts or [lib.default_prompt_file()])], categories=_split(categories),
                    limit=limit, context=context, triforce=dict(budget=method_options.kv_budget, chunk=method_options.chunk, sinks=method_options.sinks, window=method_options.window, gamma2=method_options.gamma2, bottom=method_options.bottom))
    rows = report.load_report(out_path, settings)["results"] if resume and out_path.exists() else []
    session = Session(loaded.model, loaded.max_context)
    runners = {}
    for name in names:
        d = lib.MarginRecorder(loaded.model) if name == lib.BASELINE and params.greedy else build_drafter(name, loaded, params, method_options)
        runners[name] = lib.LoopRunner(session, d, params, loaded.tokenizer.eos_ids)
    if "mlx-lm" in peer_names:
        ours_draft = getattr(runners.get("draft-model"), "drafter", None)
        runners.update(_mlx_lm_runners(loaded, params, method_options.draft_model, method_options.num_draft or 4, getattr(ours_draft, "model", None)))
    order = names + [n for n in runners if n not in names]
    todo = lib.plan(selected, order, rows)
    argv = ["mlx-specdec", *sys.argv[1:]] if Path(sys.argv[0]).name in ("mlx-specdec", "cli.py") else sys.argv
    meta = report.make_meta(loaded.path, loaded.dtype, settings, argv)
    greedy = params.greedy
    seeded = not greedy and params.seed is not None and loaded.dtype == "float32"  # texts must equal ar's

    def save():
        if out_path is not None:
            report.save_report(out_path, dict(meta=meta, summary=lib.summarize(rows, greedy, loaded.dtype, seeded), results=rows))

    interrupted = False
    try:
        with _progress() as update:
            for row in lib.run(todo, runners, loaded.tokenizer, max_tokens, progress=update):
                rows.append(row)
                save()
    except KeyboardInterrupt:
        interrupted = True
    save()
    summary = lib.summarize(rows, greedy, loaded.dtype, seeded)
    if rows:
        _print_table(summary, meta)
    if out_path is not None:
        console.print(f"[dim]{len(rows)} rows in {out_path}[/]")
    if plot is not None and rows:
        _plot(summary, plot, meta)
        console.print(f"[dim]plot: {plot}[/]")
    if interrupted:
        console.print("[yellow]interrupted[/]" + (f": continue with --resume --out {out_path}" if out_path else ""))
        raise typer.Exit(130)
    bad = {m: n for m, n in summary["mismatches"].items() if n and m in names}  # peers are reported, not failed
    if bad and not allow_mismatch:
        console.print(f"[bold red]error:[/] greedy output differs from ar's: "
                      + ", ".join(f"{m} on {n} prompt(s)" for m, n in bad.items()) + " (--allow-mismatch to ignore)")
        raise typer.Exit(1)


def _method_variant(name: str) -> None:
    """Check a bench method name: a method, or ``redrafter:beam`` / ``redrafter:dynamic`` (both
    tree shapes side by side in one bench; MethodOptions.for_method gives each its options)."""
    from ..drafters import METHODS

    base, _, variant = name.partition(":")
    if base not in METHODS:
        raise UserError(f"unknown method {base!r} (choose from: {', '.join(METHODS)})")
    if variant and (base, variant) not in (("redrafter", "beam"), ("redrafter", "dynamic"), ("recycle", "context")):
        raise UserError(f"unknown method variant {name!r} (only redrafter:beam, redrafter:dynamic and recycle:context)")


def _split(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _mlx_lm_runners(loaded, params, draft_model, num_draft, ours_draft=None) -> dict:
    """mlx-lm's models on the same directories and in the same dtype as ours.

    Their parameters have the same names as ours, so they share our arrays instead of loading a
    second copy (a 1.5B float32 target and its draft would otherwise need twice the memory).
    """
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import load_model

    from .. import bench as lib
    from ..loader import DTYPES

    def load(path, ours):
        with console.status(f"Loading {Path(path).name} with mlx-lm..."):
            theirs, _ = load_model(Path(path), lazy=True)
            mine = dict(tree_flatten(ours.parameters())) if ours is not None else {}
            if mine and mine.keys() == dict(tree_flatten(theirs.parameters())).keys():
                theirs.update(tree_unflatten(list(mine.items())))
            else:
                theirs.set_dtype(DTYPES[loaded.dtype])
            return theirs

    target = load(loaded.path, loaded.model)
    runners = {"mlx-lm": lib.MlxLmRunner(target, params, loaded.tokenizer.eos_ids)}
    if draft_model is not None:
        draft = load(resolve_model(draft_model), ours_draft)
        runners["mlx-lm-spec"] = lib.MlxLmRunner(target, params, loaded.tokenizer.eos_ids, draft_model=draft, num_draft=num_draft)
    return runners


def _progress():
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    @contextmanager
    def bar():
        with Progress(TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[what]}"),
                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True) as p:
            task = p.add_task("bench", total=None, what="")
            yield lambda done, total, what="": p.update(task, completed=done, total=total, what=what)

    return bar()


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_table(summary: dict, meta: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{Path(meta['model']).name} · {meta['backend']} · {meta['dtype']} · BLAS {meta['blas']}",
                  caption="speedup: median and mean of per-prompt tokens/s ratios over ar, and ratio of total tokens/s (Σ)")
    for col in ("category", "method", "n", "speedup med", "speedup mean", "speedup Σ", "tau", "middle tau", "tok/s", "peak MB", "mismatch"):
        table.add_column(col, justify="left" if col in ("category", "method") else "right", no_wrap=True)
    groups = list(summary["by_category"].items()) + [("overall", summary["overall"])]
    for i, (category, by_method) in enumerate(groups):
        for j, (method, s) in enumerate(by_method.items()):
            mism = "-" if not s["checked"] else (f"[red]{s['mismatches']}[/]" if s["mismatches"] else "0")
            mism += f" (+{s['near_ties']} near-tie)" if s.get("near_ties") else ""
            table.add_row(category if j == 0 else "", method, str(s["prompts"]), _fmt(s.get("speedup_median"), ".2f"), _fmt(s["speedup_mean"], ".2f"),
                          _fmt(s["speedup_total"], ".2f"), f"{s['tau']:.2f}", _fmt(s.get("middle_tau"), ".2f"),
                          f"{s['tokens_per_s']:.1f}", f"{s['peak_memory_mb']:.0f}", mism,
                          end_section=j == len(by_method) - 1 and i < len(groups) - 1, style="bold" if category == "overall" else None)
    if not out.is_terminal:  # piped or logged: Rich assumes 80 columns and would cut numbers to "…"
        out.width = max(out.width, 132)
    out.print(table)


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'mlx-specdec[plot]'") from None
    return plt


def _plot(summary: dict, path: Path, meta: dict) -> None:
    """Two panels of grouped bars (speedup over ar, tau): categories on x, one bar per method."""
    plt = _matplotlib()
    groups = {**summary["by_category"], "overall": summary["overall"]}
    methods = list(summary["overall"])
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(groups) * max(1, len(methods)) / 2 + 3), 8), sharex=True)
    width = 0.8 / len(methods)
    for ax, key, label in ((axes[0], "speedup_total", "speedup over ar (ratio of tokens/s)"), (axes[1], "tau", "tau (tokens per target forward)")):
        for k, method in enumerate(methods):
            values = [(groups[c].get(method) or {}).get(key) or 0.0 for c in groups]
            xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(groups))]
            bars = ax.bar(xs, values, width, label=method)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        ax.set_ylabel(label)
        ax.margins(y=0.15)
    axes[0].legend(ncol=len(methods), fontsize=8, loc="upper left")
    axes[0].set_title(f"{Path(meta['model']).name} · {meta['backend']} · {meta['dtype']} · max {meta['settings']['max_tokens']} tokens", fontsize=10)
    axes[1].set_xticks(range(len(groups)), list(groups), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
