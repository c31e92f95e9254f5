"""The CPU forward's two kernels switches, same process, interleaved: row padding (Linear inputs
padded to the row count the BLAS runs fastest, ``models/row_padding.py``) and the power-of-two
SwiGLU (``models/cpu_swiglu.py``), each on and off.

    python scripts/cpu_forward_ab.py --sizes 1,2,4,8,12,16 --rounds 3

Prints, per setting, the forward cost the tree budget times (``measure_forward_costs``: the loop's
own forward, tree mask and positions, behind 256 cached tokens) in ms, the minimum over rounds.
The default model in float32 on the CPU; the plan is the one cached for this device.
"""

from __future__ import annotations

import argparse

from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,2,4,8,12,16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_fast_blas()
    import mlx.core as mx
    from mlx_lm.models.activations import swiglu as mlx_lm_swiglu

    from mlx_specdec.drafters.tree_budget import measure_forward_costs
    from mlx_specdec.loader import load
    from mlx_specdec.models import cpu_swiglu
    from mlx_specdec.store import default_model_dir

    target = load(default_model_dir(), "float32").model
    plan, fast = dict(target.row_plan), cpu_swiglu.swiglu
    sizes = tuple(int(s) for s in args.sizes.split(","))
    settings = {"both off": ({}, mlx_lm_swiglu), "row padding": (plan, mlx_lm_swiglu),
                "swiglu": ({}, fast), "both on": (plan, fast)}
    best = {name: {n: float("inf") for n in sizes} for name in settings}
    for _ in range(args.rounds):
        for name, (row_plan, swiglu) in settings.items():
            target.row_plan, cpu_swiglu.swiglu = row_plan, swiglu
            for n, seconds in measure_forward_costs(target, sizes=sizes, repeats=3).items():
                best[name][n] = min(best[name][n], seconds)
    print(f"device={mx.default_device()} blas={blas_in_use()} float32, row plan {plan}")
    print("tokens      " + "".join(f"{n:>8d}" for n in sizes))
    for name, costs in best.items():
        print(f"{name:12s}" + "".join(f"{1000 * costs[n]:8.1f}" for n in sizes))


if __name__ == "__main__":
    main()
