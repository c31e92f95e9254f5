"""Spec-Bench-style benchmark: every method against autoregressive decoding, prompt by prompt.

Prompts are ``{question_id, category, turns}`` records. For each prompt the methods run one after
the other in the same process, ``ar`` first, so machine drift hits them alike; a multi-turn prompt
feeds each method's own answer back through the chat template. Each (prompt, method) is one row:

    {"question_id": 82, "category": "writing", "method": "pld", "tokens": [...], "new_tokens": 128,
     "decode_tokens": 127, "seconds": 1.93, "tokens_per_s": 65.8, "tau": 1.42, ...}

``seconds`` is decode wall time (from the first token to the last; the prefill is ``prefill_s``).
A prompt's first turn is prefilled once, by the first of our methods on it; the others start
from that cache and root distribution (their ``prefill_tokens`` is 0), which also makes every
method's starting state bit-identical, and a long-context bench cost one prefill per prompt.
Under greedy decoding :func:`summarize` checks every row's tokens against ``ar``'s on the same
prompt and classifies each divergence (DESIGN.md §3): the ``ar`` row records, for every token it
emitted, the target's top-2 logit margin there (``margins``); a method whose first differing token
sits where that margin is below ``NEAR_TIE_MARGIN[dtype]`` diverged at a near-tie (a tree forward
and a one-token forward may round the two logits apart), anything else is a mismatch (a bug). Nothing here prints; ``cli/bench_cmd.py`` draws the progress bar, table and plot.
The JSON file is documented in docs/bench.md.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Callable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from .generate import Session
from .prompts import Prompt, default_prompt_file, read_prompts, select  # noqa: F401 (the bench's API)
from .sampling import SamplingParams
from .stats import RunStats

WARMUP_TOKENS = 16
BASELINE = "ar"
# Top-2 logit margin below which a greedy divergence from ar counts as a near-tie, per dtype. A
# divergence needs the two computations of (top1 - top2) to differ by at least the margin; the
# thresholds are about twice the largest per-logit difference measured between a tree forward and
# one-token forwards of the default model (README, "float16 / bfloat16"). float32: exact, none.
NEAR_TIE_MARGIN = {"float32": 0.0, "float16": 0.5, "bfloat16": 2.0}
PEERS = {"mlx-lm": "mlx_lm.generate's generate_step (and speculative_generate_step with --draft-model)"}


def row_key(row: dict) -> tuple:
    return (row["category"], row["question_id"], row["method"])


def top2_margin(logits: mx.array) -> mx.array:
    """top1 - top2 of logits (..., V), in float32 (lazy)."""
    top = mx.topk(logits.astype(mx.float32), 2, axis=-1)
    return mx.max(top, axis=-1) - mx.min(top, axis=-1)


class MarginRecorder:
    """The ``ar`` baseline (proposes the root alone) that also keeps the target's top-2 logit
    margin behind every token it emits: ``margins[i]`` belongs to the i-th emitted token. The
    margins stay lazy until the turn ends (no extra host sync per step)."""

    name = BASELINE

    def __init__(self, target):
        self.target, self.pending = target, []

    def reset(self, context, hidden) -> None:
        self.pending = [top2_margin(self.target.lm_head_logits(hidden))]

    def propose(self, root: int):
        from .tree import Tree

        return Tree.chain(root)

    def commit(self, tree, path, hidden, logits) -> None:
        self.pending.append(top2_margin(logits[path[-1]]))

    def take(self, n: int) -> list[float]:
        """The margins of the turn's first ``n`` tokens (a cut last step's extra margin dropped)."""
        margins = mx.stack(self.pending[:n]) if n else mx.zeros((0,))
        self.pending = []
        return [round(float(m), 4) for m in np.array(margins)]


class LoopRunner:
    """One of our methods: the shared target session with this method's drafter."""

    peer = False

    def __init__(self, session: Session, drafter, params: SamplingParams, eos_ids):
        self.session, self.drafter, self.params, self.eos_ids = session, drafter, params, eos_ids

    def start(self, first_ids: list[int]) -> None:
        """Before a prompt whose first turn is ``first_ids``: the method before this one on the
        same prompt left its prefill in the cache (reused whole, see ``Session``); any other
        prompt is prefilled from scratch, so no method's cache depends on the prompt before."""
        if self.session.cached[: len(first_ids)] != first_ids:
            self.session.reset()

    def turn(self, ids: list[int], max_tokens: int, stats: RunStats) -> tuple[list[int], float]:
        """Generate after ``ids``; adds to ``stats``; returns (tokens, decode wall seconds)."""
        tokens, first = [], None
        for step in self.session.generate(ids, self.drafter, self.params, max_tokens, self.eos_ids):
            now = time.perf_counter()
            if step.prefill:
                stats.prefill_tokens += self.session.last_prefill_tokens
                first = now
            stats.add(step)
            tokens += step.tokens
        return tokens, now - first


class MlxLmRunner:
    """mlx-lm's own decoding (``generate_step``, or ``speculative_generate_step`` with a draft
    model) on the same weights and prompt ids, timed like ours: the clock starts at the first
    target-produced token (after mlx-lm's prefill), and tokens up to it are not decode tokens."""

    peer = True

    def __init__(self, model, params: SamplingParams, eos_ids, draft_model=None, num_draft: int = 4):
        from mlx_lm.sample_utils import make_sampler

        self.model, self.draft_model, self.num_draft, self.eos_ids = model, draft_model, num_draft, set(eos_ids)
        self.sampler = make_sampler(params.temperature, params.top_p, min_p=params.min_p, top_k=params.top_k)
        self.seed = params.seed

    def start(self, first_ids: list[int]) -> None:
        if self.seed is not None:
            mx.random.seed(self.seed)

    def turn(self, ids: list[int], max_tokens: int, stats: RunStats) -> tuple[list[int], float]:
        from mlx_lm.generate import generate_step, speculative_generate_step

        prompt = mx.array(ids)
        if self.draft_model is None:
            steps = ((t, False) for t, _ in generate_step(prompt, self.model, max_tokens=max_tokens, sampler=self.sampler))
        else:
            steps = ((t, d) for t, _, d in speculative_generate_step(
                prompt, self.model, self.draft_model, num_draft_tokens=self.num_draft, max_tokens=max_tokens,
                sampler=self.sampler))
        t0 = time.perf_counter()
        tokens, first, counted, forwards, drafted, eos, from_draft = [], None, 0, 0, 0, False, False
        for token, from_draft in steps:
            token, now = int(token), time.perf_counter()
            forwards += not from_draft  # each target forward ends with one token of its own
            drafted += from_draft
            if first is None and not from_draft:
                first, counted = now, len(tokens) + 1
                stats.prefill_s += now - t0
            if token in self.eos_ids:
                eos = True
                break
            tokens.append(token)
        steps.close()
        forwards += from_draft  # stopped inside a verified run of drafts
        seconds = now - first if first is not None else 0.0
        stats.prefill_tokens += len(ids)
        stats.new_tokens += len(tokens)
        stats.produced += len(tokens) + eos
        stats.target_forwards += forwards
        stats.decode_tokens += max(len(tokens) - counted, 0)
        stats.accepted += drafted
        return tokens, seconds


def peak_memory_mb() -> tuple[float, str]:
    """MLX's peak since the last reset, else the process's maximum resident set size."""
    peak = mx.get_peak_memory()
    if peak:
        return peak / 2**20, "mlx"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "rss"


def run_conversation(tokenizer, prompt: Prompt, method: str, runner, max_tokens: int) -> dict:
    """One row: ``prompt``'s turns in order with ``runner``, each answer fed back as context."""
    stats, tokens, per_turn, seconds, messages = RunStats(), [], [], 0.0, []
    recorder = getattr(runner, "drafter", None)
    margins = [] if isinstance(recorder, MarginRecorder) else None
    mx.reset_peak_memory()
    runner.start(tokenizer.chat_ids([{"role": "user", "content": prompt.turns[0]}]))
    for text in prompt.turns:
        messages.append({"role": "user", "content": text})
        out, secs = runner.turn(tokenizer.chat_ids(messages), max_tokens, stats)
        if margins is not None:
            margins += recorder.take(len(out))
        messages.append({"role": "assistant", "content": tokenizer.decode(out)})
        tokens += out
        per_turn.append(len(out))
        seconds += secs
    memory, source = peak_memory_mb()
    ours = not runner.peer
    row = dict(
        question_id=prompt.question_id, category=prompt.category, method=method, peer=runner.peer,
        tokens=tokens, turn_new_tokens=per_turn, new_tokens=len(tokens), decode_tokens=stats.decode_tokens,
        target_forwards=stats.target_forwards, seconds=round(seconds, 5),
        tokens_per_s=round(stats.decode_tokens / seconds, 3) if seconds > 0 else 0.0, tau=round(stats.tau, 4),
        prefill_tokens=stats.prefill_tokens, prefill_s=round(stats.prefill_s, 5),
        draft_s=round(stats.draft_s, 5) if ours else None, verify_s=round(stats.verify_s, 5) if ours else None,
        bookkeeping_s=round(stats.bookkeeping_s, 5) if ours else None,
        proposed=stats.proposed if ours else None, accepted=stats.accepted,
        forward_tokens=stats.forward_tokens if ours else None,
        proposed_by_depth=stats.proposed_by_depth if ours else None,
        accepted_by_depth=stats.accepted_by_depth if ours else None,
        acceptance_by_depth=[round(a, 4) for a in stats.acceptance_by_depth] if ours else None,
        peak_memory_mb=round(memory, 1), memory_source=source,
        middle=stats.middle if ours else None,  # TriForce's middle level: forwards, proposed, accepted, tau
    )
    if margins is not None:
        row["margins"] = margins
    return row


def run(todo: Sequence[tuple[Prompt, str]], runners: dict, tokenizer, max_tokens: int,
        progress: Callable[[int, int, str], None] | None = None, warmup: bool = True) -> Iterator[dict]:
    """Run the (prompt, method) pairs in order, yielding one row each. A warm-up generation of
    every runner on the first prompt comes first and is not reported."""
    progress = progress or (lambda *_: None)
    if warmup and todo:
        first = Prompt(todo[0][0].question_id, "warm-up", todo[0][0].turns[:1])
        for name in dict.fromkeys(m for _, m in todo):
            progress(0, len(todo), f"warm-up · {name}")
            run_conversation(tokenizer, first, name, runners[name], min(max_tokens, WARMUP_TOKENS))
    for i, (prompt, method) in enumerate(todo):
        progress(i, len(todo), f"{prompt.category} #{prompt.question_id} · {method}")
        yield run_conversation(tokenizer, prompt, method, runners[method], max_tokens)
    progress(len(todo), len(todo), "done")


def plan(prompts: Sequence[Prompt], methods: Sequence[str], rows: Sequence[dict] = ()) -> list[tuple[Prompt, str]]:
    """The (prompt, method) pairs still to run, prompt-major (methods interleaved per prompt)."""
    done = {row_key(r) for r in rows}
    return [(p, m) for p in prompts for m in methods if (p.category, p.question_id, m) not in done]


SAMPLED_DRAFTS = ("draft-model", "triforce")  # methods whose drafts are samples (min(1, p/q) rule)


def check_lossless(rows: Sequence[dict], greedy: bool, dtype: str = "float32", seeded_sampling: bool = False) -> None:
    """Set each row's ``matches_ar`` (None where there is nothing to compare: ar itself, or no ar
    row for the prompt; sampling, unless ``seeded_sampling``), ``first_mismatch`` (index of the
    first differing token), ``divergence`` (None, "near-tie" or "mismatch") and
    ``divergence_margin`` (ar's top-2 logit margin at that token; None when ar recorded none
    there, e.g. it stopped: then "mismatch").

    ``seeded_sampling`` (sampling with one ``--seed``, float32): every method whose drafts are not
    samples emits the same position-keyed samples as ar, so its text must be ar's too (ar records
    no margins there: any divergence is a mismatch, as in float32 greedy); methods with sampled
    drafts (``SAMPLED_DRAFTS``) and peers sample otherwise and are not compared."""
    base = {(r["category"], r["question_id"]): r for r in rows if r["method"] == BASELINE}
    threshold = NEAR_TIE_MARGIN.get(dtype, 0.0)
    for r in rows:
        ref = base.get((r["category"], r["question_id"]))
        r["divergence"], r["divergence_margin"] = None, None
        comparable = greedy or (seeded_sampling and not r.get("peer") and r["method"].partition(":")[0] not in SAMPLED_DRAFTS)
        if not comparable or r["method"] == BASELINE or ref is None:
            r["matches_ar"], r["first_mismatch"] = None, None
            continue
        same = r["tokens"] == ref["tokens"] and r["turn_new_tokens"] == ref["turn_new_tokens"]
        r["matches_ar"] = same
        r["first_mismatch"] = None if same else next(
            (i for i, (a, b) in enumerate(zip(r["tokens"], ref["tokens"])) if a != b),
            min(len(r["tokens"]), len(ref["tokens"])))
        if not same:
            margins = ref.get("margins") or []
            i = r["first_mismatch"]
            r["divergence_margin"] = margins[i] if i < len(margins) else None
            near = r["divergence_margin"] is not None and r["divergence_margin"] < threshold
            r["divergence"] = "near-tie" if near else "mismatch"


def _aggregate(rows: list[dict], base: dict) -> dict:
    paired = [(r, base[(r["category"], r["question_id"])]) for r in rows if (r["category"], r["question_id"]) in base]
    ratios = [r["tokens_per_s"] / b["tokens_per_s"] for r, b in paired if r["tokens_per_s"] > 0 and b["tokens_per_s"] > 0]

    def rate(rs):
        seconds = sum(r["seconds"] for r in rs)
        return sum(r["decode_tokens"] for r in rs) / seconds if seconds > 0 else 0.0

    base_rate = rate([b for _, b in paired])
    forwards = sum(r["target_forwards"] for r in rows)
    middle = [r["middle"] for r in rows if r.get("middle")]
    m_forwards, m_proposed, m_accepted = (sum(m[k] for m in middle) for k in ("forwards", "proposed", "accepted"))
    return dict(
        prompts=len(rows),
        new_tokens=sum(r["new_tokens"] for r in rows),
        seconds=round(sum(r["seconds"] for r in rows), 4),
        tokens_per_s=round(rate(rows), 3),
        speedup_mean=round(sum(ratios) / len(ratios), 4) if ratios else None,
        speedup_median=round(float(np.median(ratios)), 4) if ratios else None,
        speedup_total=round(rate([r for r, _ in paired]) / base_rate, 4) if paired and base_rate > 0 else None,
        tau=round(sum(r["tau"] * r["target_forwards"] for r in rows) / forwards, 4) if forwards else 0.0,
        prefill_s=round(sum(r["prefill_s"] for r in rows), 4),
        peak_memory_mb=max(r["peak_memory_mb"] for r in rows),
        checked=sum(r["matches_ar"] is not None for r in rows),
        mismatches=sum(r.get("divergence") == "mismatch" for r in rows),
        near_ties=sum(r.get("divergence") == "near-tie" for r in rows),
        middle_tau=round((m_accepted + m_forwards) / m_forwards, 4) if m_forwards else None,
        middle_acceptance=round(m_accepted / m_proposed, 4) if m_proposed else None,
    )


def summarize(rows: Sequence[dict], greedy: bool, dtype: str = "float32", seeded_sampling: bool = False) -> dict:
    """Per category and overall, per method: speedup over ar (mean of per-prompt tokens/s ratios,
    and ratio of total tokens/s), tau, tokens/s, mismatches and near-ties. Also checks losslessness
    (see :func:`check_lossless`); ``lossless`` is False when one of our methods (not a peer) had a
    mismatch (near-ties, allowed in float16/bfloat16, do not count)."""
    check_lossless(rows, greedy, dtype, seeded_sampling)
    base = {(r["category"], r["question_id"]): r for r in rows if r["method"] == BASELINE}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    categories = list(dict.fromkeys(r["category"] for r in rows))

    def table(rs):
        return {m: _aggregate([r for r in rs if r["method"] == m], base) for m in methods if any(r["method"] == m for r in rs)}

    overall = table(rows)
    peers = {r["method"] for r in rows if r["peer"]}
    return dict(
        by_category={c: table([r for r in rows if r["category"] == c]) for c in categories},
        overall=overall,
        mismatches={m: s["mismatches"] for m, s in overall.items()},
        near_ties={m: s["near_ties"] for m, s in overall.items()},
        lossless=all(s["mismatches"] == 0 for m, s in overall.items() if m not in peers),
    )
