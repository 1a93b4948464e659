"""Achieved FLOP/s of each method's training step, as a fraction of this machine's matmul peak.

For each method, the trainer's own step (``gnbench.train.method_step``: gradient scan or GN inner
solve, line search, update) is compiled at K micro-batches and timed; its FLOPs are XLA's count
(``gnbench.train.flops``). The machine's limit is the FLOP/s of a dense square float32 matmul
measured in the same process (``--matmul-size``). Steps run round-robin and the fastest of
``--repeats`` runs counts, so that load from other processes disturbs every method alike; the
table also gives each method's FLOPs and time per iteration relative to AdamW's.

Usage:
  .venv/bin/python benchmarks/flops_utilization.py --model tiny --k 4 --repeats 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments.base import get_config
from gnbench.model import get_model_config
from gnbench.model.sharding import make_mesh
from gnbench.train.method_step import MethodStep

METHODS = (
    "adamw",
    "muon",
    "muon_optax",
    "soap",
    "gauss_newton",
    "gn_prox_linear",
    "layerwise_gn",
)


def fastest(thunks: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of each thunk, run round-robin."""
    best = {name: float("inf") for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            start = time.perf_counter()
            jax.block_until_ready(thunk())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of an ``n x n`` float32 matmul (fastest of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x).lower(a).compile()
    jax.block_until_ready(mm(a))
    seconds = fastest({"mm": lambda: mm(a)}, repeats)["mm"]
    return 2 * n**3 / seconds


def method_thunks(args: argparse.Namespace) -> tuple[dict, dict[str, float]]:
    """A thunk running one step of each method, and each step's FLOPs."""
    model_cfg = get_model_config(args.model)
    mesh = make_mesh()
    thunks, flops = {}, {}
    rng = np.random.default_rng(0)
    for name in args.methods.split(","):
        cfg = get_config().optimizer
        cfg.name = name
        ms, opt, state = MethodStep.create(
            cfg,
            model_cfg,
            mesh,
            micro_batch=args.micro_batch,
            seq_len=args.seq_len,
            total_steps=1000,
            k=args.k,
        )
        step = ms.lower(args.k, opt).compile()
        n_batches = 1 + (opt.fresh_ls_micro_batches > 0)
        shape = (args.k, args.micro_batch, args.seq_len + 1)
        batches = [
            jax.device_put(rng.integers(0, model_cfg.vocab_size, shape, dtype=np.int32))
            for _ in range(n_batches)
        ]
        holder = {"state": state}

        def run(step=step, holder=holder, batches=batches):
            holder["state"], metrics = step(holder["state"], *batches)  # The state is donated.
            return metrics

        run()
        thunks[name] = run
        flops[name] = ms.measure_cost(args.k, opt)["step_flops"]
    return thunks, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--micro-batch", type=int, default=16, help="b: sequences per micro-batch")
    parser.add_argument("--seq-len", type=int, default=64, help="T: tokens per sequence")
    parser.add_argument("--k", type=int, default=4, help="K: micro-batches per iteration")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (fastest counts)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the peak matmul")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names")
    args = parser.parse_args()

    thunks, flops = method_thunks(args)
    seconds = fastest(thunks, args.repeats)
    peak = matmul_peak(args.matmul_size, args.repeats)
    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} model={args.model} "
        f"b={args.micro_batch} T={args.seq_len} K={args.k} repeats={args.repeats}; "
        f"{args.matmul_size}^2 float32 matmul peak {peak / 1e9:.0f} GFLOP/s\n"
    )
    print(
        "| method | GFLOPs / iter | FLOPs / AdamW | ms / iter | time / AdamW | GFLOP/s | of peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = "adamw" if "adamw" in flops else next(iter(flops))
    for name in flops:
        rate = flops[name] / seconds[name]
        print(
            f"| {name} | {flops[name] / 1e9:.1f} | {flops[name] / flops[base]:.2f} | "
            f"{1e3 * seconds[name]:.1f} | {seconds[name] / seconds[base]:.2f} | "
            f"{rate / 1e9:.1f} | {rate / peak:.1%} |"
        )


if __name__ == "__main__":
    main()
