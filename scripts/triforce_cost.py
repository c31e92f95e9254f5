"""Forward time of the target over the full KV cache vs through a retrieval view (TriForce).

    python scripts/triforce_cost.py --past 8192 --budgets 512,1024,2048 --sizes 1,8

After a prefill of ``past`` random tokens, prints the median milliseconds of a forward over n new
tokens: over the full cache, through a RetrievalView (selection reused), and a view's rebuild +
first forward (the selection's scoring and gather included). ``--synthetic`` fills the cache with
random keys and values instead of a prefill (the cost of a forward does not depend on them, and an
8K prefill takes minutes on a small CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

from mlx_specdec.cache import KVCache
from mlx_specdec.cache_views import RetrievalView
from mlx_specdec.generate import PREFILL_CHUNK
from mlx_specdec.loader import load
from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--past", type=int, default=8192 - 64)
    parser.add_argument("--budgets", default="512,1024,2048")
    parser.add_argument("--sizes", default="1,8")
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--sinks", type=int, default=16)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--synthetic", action="store_true", help="random KV instead of a prefill")
    args = parser.parse_args()
    ensure_fast_blas()
    if args.model is None:
        from mlx_specdec.store import default_model_dir

        args.model = default_model_dir()
    model = load(args.model, args.dtype).model
    rng = np.random.default_rng(0)
    cache = KVCache(len(model.layers))
    if args.synthetic:
        a = model.args
        for layer in range(len(model.layers)):
            kv = [mx.random.normal((1, a.num_key_value_heads, args.past, a.head_dim)).astype(model.model.norm.weight.dtype) for _ in "kv"]
            cache.update(layer, *kv)
        cache.advance(args.past)
        mx.eval(*cache.state())
    else:
        ids = rng.integers(0, 1000, args.past)
        for start in range(0, args.past, PREFILL_CHUNK):
            mx.eval(model.hidden(mx.array(ids[start : start + PREFILL_CHUNK])[None], cache), *cache.state())
    print(f"model={args.model} dtype={args.dtype} device={mx.default_device()} blas={blas_in_use()} past={args.past}{' (synthetic KV)' if args.synthetic else ''}")
    for n in map(int, args.sizes.split(",")):
        tokens = mx.array(rng.integers(0, 1000, (1, n)))

        def full():
            mx.eval(model(tokens, cache)[0], *cache.state())
            cache.trim(n)

        print(f"n={n:3d} full cache      {timed(full, args.repeats):8.1f} ms")
        for budget in map(int, args.budgets.split(",")):
            view = RetrievalView(cache, budget, args.chunk, args.sinks, args.window)

            def rebuild_and_forward():
                view.rebuild()
                mx.eval(model(tokens, view)[0], *view.state())

            def forward():
                mx.eval(model(tokens, view)[0], *view.state())
                view.trim(n)

            first = timed(rebuild_and_forward, args.repeats)
            print(f"n={n:3d} view budget {budget:5d} {timed(forward, args.repeats):8.1f} ms  (rebuild + first forward {first:.1f} ms)")


if __name__ == "__main__":
    main()
