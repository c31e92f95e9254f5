"""Where a long-context forward's attention time goes on MLX's CPU backend: the exponentials.

    python scripts/attention_cost.py --keys 8192 --sizes 1,7

Times, for one layer of the default model's shape (9 query heads, 3 KV heads, head_dim 64) over
``keys`` cached keys: ``mx.fast.scaled_dot_product_attention`` for n new tokens, the app's CPU
attention (``mlx_specdec/models/cpu_attention.py``: the softmax by ``mx.power(2, x)``), the same
attention's softmax alone, ``mx.exp`` and ``mx.power(2, x)`` alone on the score tensor, and
numpy's exp on it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

from mlx_specdec.models.cpu_attention import attention
from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas


def timed(fn, repeats=20):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=8192)
    parser.add_argument("--sizes", default="1,7")
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    args = parser.parse_args()
    ensure_fast_blas()
    H, KV, D, S = args.heads, args.kv_heads, args.head_dim, args.keys
    k, v = mx.random.normal((1, KV, S, D)), mx.random.normal((1, KV, S, D))
    mx.eval(k, v)
    print(f"device={mx.default_device()} blas={blas_in_use()} keys={S} heads={H}/{KV} head_dim={D} (one layer)")
    for n in map(int, args.sizes.split(",")):
        q = mx.random.normal((1, H, n, D))
        scores = mx.random.normal((1, H, n, S))
        mx.eval(q, scores)
        as_numpy = np.array(scores)
        mask = "causal" if n > 1 else None
        sdpa = timed(lambda: mx.eval(mx.fast.scaled_dot_product_attention(q, k, v, scale=D**-0.5, mask=mask)))
        ours = timed(lambda: mx.eval(attention(q, k, v, D**-0.5, mask)))
        softmax = timed(lambda: mx.eval(mx.softmax(scores, axis=-1)))
        power = timed(lambda: mx.eval(mx.power(2.0, scores)))
        exp = timed(lambda: mx.eval(mx.exp(scores)))
        mul = timed(lambda: mx.eval(scores * 1.5))
        np_exp = timed(lambda: np.exp(as_numpy))
        print(f"n={n:3d}  sdpa {sdpa:7.2f} ms  cpu_attention {ours:7.2f}  softmax {softmax:7.2f}  mx.exp {exp:7.2f}"
              f"  mx.power(2, x) {power:7.2f}  mx.multiply {mul:6.2f}  numpy exp {np_exp:6.2f}")


if __name__ == "__main__":
    main()
