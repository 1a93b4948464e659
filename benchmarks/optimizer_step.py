"""Time of one optimizer update (and one full train step) relative to AdamW, in one run.

Every optimizer is built by the registry from ``experiments/base.py`` (so clipping and
``inject_hyperparams`` are included, as in training) and timed on the parameters of gnbench
models with random gradients. A *repeat* times ``window`` consecutive jitted calls (for SOAP the
precondition frequency, so each window holds exactly one basis refresh) after ``--warmup`` calls
(the first call, which runs ``eigh`` for SOAP, is always a warmup call); the table reports the
median over repeats of the time per call, and its ratio to AdamW's measured in the same run.
The train step is forward + backward + update on one micro-batch of tokens.

Usage:
  python benchmarks/optimizer_step.py --models tiny,small --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from experiments.base import get_config
from gnbench.model import apply, get_model_config, init_params
from gnbench.optim import BuildContext, build

VARIANTS = [  # (label, registry name, soap precondition_frequency)
    ("adamw", "adamw", None),
    ("muon", "muon", None),
    ("soap f=1", "soap", 1),
    ("soap f=10", "soap", 10),
    ("soap f=100", "soap", 100),
]


def time_per_call(fn: Callable, carry, window: int, repeats: int, warmup: int) -> float:
    """Median over ``repeats`` of (wall time of ``window`` chained calls) / ``window``, in s."""
    for _ in range(max(warmup, 1)):
        carry = fn(*carry)
    jax.block_until_ready(carry)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(window):
            carry = fn(*carry)
        jax.block_until_ready(carry)
        times.append((time.perf_counter() - start) / window)
    return statistics.median(times)


def build_tx(name: str, frequency: int | None) -> optax.GradientTransformationExtraArgs:
    cfg = get_config().optimizer
    cfg.name = name
    if frequency is not None:
        cfg.soap.precondition_frequency = frequency
    return build(cfg, BuildContext(total_steps=10_000, micro_batches=1)).tx


def bench_model(model: str, args: argparse.Namespace) -> list[tuple]:
    mcfg = get_model_config(model)
    params = init_params(mcfg, jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    grads = jax.tree.unflatten(
        treedef,
        [1e-3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)],
    )
    tokens = jax.random.randint(jax.random.key(2), (args.batch, args.seq + 1), 0, mcfg.vocab_size)
    n_params = sum(x.size for x in leaves)
    rows = []
    for label, name, frequency in VARIANTS:
        tx = build_tx(name, frequency)
        window = frequency or args.window  # SOAP: exactly one basis refresh per window.

        @jax.jit
        def update(params, state, tx=tx):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        @jax.jit
        def train_step(params, state, tx=tx):
            def loss_fn(p):
                logits = apply(mcfg, p, tokens[:, :-1])
                labels = tokens[:, 1:]
                logp = jax.nn.log_softmax(logits)
                return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1))

            g = jax.grad(loss_fn)(params)
            updates, state = tx.update(g, state, params)
            return optax.apply_updates(params, updates), state

        state = tx.init(params)
        t_update = time_per_call(update, (params, state), window, args.repeats, args.warmup)
        t_train = time_per_call(train_step, (params, state), window, args.repeats, args.warmup)
        rows.append((model, n_params, label, t_update, t_train))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small", help="comma-separated model names")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per measurement")
    parser.add_argument("--window", type=int, default=5, help="calls per timed window (not SOAP)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after compiling")
    parser.add_argument("--batch", type=int, default=16, help="sequences in the train step")
    parser.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    args = parser.parse_args()

    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} batch={args.batch} "
        f"seq={args.seq} repeats={args.repeats}\n"
    )
    print(
        "| model | params | optimizer | update ms | update / AdamW | train step ms "
        "| train step / AdamW |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for model in args.models.split(","):
        rows = bench_model(model, args)
        base_update, base_train = rows[0][3], rows[0][4]
        for m, n, label, t_u, t_t in rows:
            print(
                f"| {m} | {n / 1e6:.2f}M | {label} | {1e3 * t_u:.2f} | {t_u / base_update:.2f} "
                f"| {1e3 * t_t:.2f} | {t_t / base_train:.2f} |"
            )


if __name__ == "__main__":
    main()
