"""How far a tree forward's logits drift from one-token forwards of the same paths, per dtype.

The bench calls a greedy divergence from ``ar`` a near-tie when ar's top-2 logit margin at the
first differing token is below ``NEAR_TIE_MARGIN[dtype]`` (mlx_specdec/bench.py). A rounding
difference can only flip two logits whose margin is below the largest difference of
(top1 - top2) between the two computations, at most twice the largest per-logit difference this
script prints. Usage: ``python scripts/tree_rounding.py [-m MODEL] [--dtypes float16,bfloat16]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_specdec.cache import KVCache  # noqa: E402
from mlx_specdec.generate import Session  # noqa: E402
from mlx_specdec.loader import load  # noqa: E402
from mlx_specdec.platform_setup import ensure_fast_blas  # noqa: E402
from mlx_specdec.store import resolve_model  # noqa: E402
from mlx_specdec.tree import Tree  # noqa: E402


def drift(model, prompt: list[int], tree: Tree) -> tuple[float, float]:
    """(max |logit difference|, max |difference of top1 - top2|) over the tree's nodes."""
    session = Session(model)
    session._prefill(prompt)
    logits, _ = session.forward(tree)
    worst, worst_margin = 0.0, 0.0
    for node in range(tree.num_nodes):
        cache = KVCache(len(model.layers))
        model(mx.array(prompt)[None], cache)
        for token in tree.tokens[tree.path_to(node)]:
            ref, _ = model(mx.array([[int(token)]]), cache)
        a, b = np.array(ref[0, -1].astype(mx.float32)), np.array(logits[node].astype(mx.float32))
        worst = max(worst, float(np.abs(a - b).max()))
        top = np.argsort(a)[-2:]
        worst_margin = max(worst_margin, abs(float((a[top[1]] - a[top[0]]) - (b[top[1]] - b[top[0]]))))
    return worst, worst_margin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    ensure_fast_blas()
    rng = np.random.default_rng(0)
    path = resolve_model(args.model)
    out = {}
    for dtype in args.dtypes.split(","):
        model = load(path, dtype).model
        vocab = model.args.vocab_size
        per_logit, per_margin = [], []
        for _ in range(args.trials):
            prompt = rng.integers(0, vocab, 64).tolist()
            tree = Tree(rng.integers(0, vocab, 8), np.array([-1, 0, 0, 1, 2, 3, 3, 4]))
            a, b = drift(model, prompt, tree)
            per_logit.append(a)
            per_margin.append(b)
        out[dtype] = dict(max_logit_diff=round(max(per_logit), 4), max_margin_diff=round(max(per_margin), 4))
        print(dtype, out[dtype], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
