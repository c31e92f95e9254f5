"""Time one target forward over n new tokens (after a prompt in the cache), for several n.

    python scripts/forward_cost.py [MODEL_DIR] --dtype float32 --sizes 1,4,8,16,64

Prints one line per n: median milliseconds over repeats. Run it with and without OpenBLAS
(``MLX_SPECDEC_NO_BLAS_REEXEC=1`` keeps the reference BLAS) to see the BLAS effect.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

from mlx_specdec.cache import KVCache
from mlx_specdec.loader import load
from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sizes", default="1,4,8,16,32,64")
    parser.add_argument("--past", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    ensure_fast_blas()
    if args.model is None:
        from mlx_specdec.store import default_model_dir

        args.model = default_model_dir()
    loaded = load(args.model, args.dtype)
    model = loaded.model
    rng = np.random.default_rng(0)
    cache = KVCache(len(model.layers))
    mx.eval(model(mx.array(rng.integers(0, 1000, (1, args.past))), cache)[0], *cache.state())
    print(f"model={args.model} dtype={args.dtype} device={mx.default_device()} blas={blas_in_use()} past={args.past}")
    for n in map(int, args.sizes.split(",")):
        times = []
        for _ in range(args.repeats):
            tokens = mx.array(rng.integers(0, 1000, (1, n)))
            start = time.perf_counter()
            logits, _ = model(tokens, cache)
            mx.eval(logits, *cache.state())
            times.append(time.perf_counter() - start)
            cache.trim(n)
        print(f"n={n:4d}  {1000 * statistics.median(times[1:]):8.1f} ms")


if __name__ == "__main__":
    main()
