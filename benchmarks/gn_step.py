"""Cost of one GN-family inner step relative to one AdamW micro-batch step, and peak memory.

For each model, times jitted outer steps: AdamW runs K micro-steps (forward + backward + update
on one micro-batch each) in a ``lax.scan``; each GN method runs one outer step of K inner steps
(no line search). Steps run round-robin and the fastest of several runs counts, so that load
from other processes disturbs every method alike. Per-step time divided by AdamW's
per-micro-step time is an inner step's cost in wall-clock; runs charge compute in FLOPs counted
by XLA instead (``gnbench.train.flops``; ``benchmarks/flops_utilization.py`` puts both side by
side). A forward-only loss evaluation (what the line search pays per micro-batch and step size)
is timed too. Memory is XLA's ``memory_analysis()`` of the compiled outer step (temporaries and
arguments).

Usage:
  .venv/bin/python benchmarks/gn_step.py --models tiny small --micro-batch 16 --seq-len 64 --k 4
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from gnbench.model import apply, get_model_config, init_params
from gnbench.model.transformer import stages
from gnbench.optim.gn.curvature import gn_output_rule, linearized_model_eval
from gnbench.optim.gn.gauss_newton import gauss_newton
from gnbench.optim.gn.layerwise import layerwise_gauss_newton, transformer_blocks
from gnbench.optim.gn.prox_linear import gn_prox_linear
from gnbench.optim.gn.staged import (
    StagedModel,
    StageMaps,
    check_stages,
    linearize_stages,
    staged_model_eval,
)

#: The full-GN method each layerwise method is compared with (the ``/ full`` column).
FULL_OF = {"layerwise_gn": "gauss_newton", "layerwise_prox_linear": "gn_prox_linear"}


def cross_entropy(logits_BxLxV: jax.Array, seqs_BxT1: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits_BxLxV)
    return -jnp.mean(jnp.take_along_axis(logp, seqs_BxT1[:, 1:, None], axis=-1))


def compiled(fn: Callable, args: tuple) -> tuple[Callable[[], object], float, float]:
    """``fn`` compiled for ``args`` and run once: a thunk running it, and XLA's memory analysis
    (temporaries, arguments) in MB (nan if the backend does not report it)."""
    exe = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(exe(*args))
    stats = exe.memory_analysis()
    temp = stats.temp_size_in_bytes / 2**20 if stats is not None else float("nan")
    arg = stats.argument_size_in_bytes / 2**20 if stats is not None else float("nan")
    return (lambda: jax.block_until_ready(exe(*args))), temp, arg


def interleaved_min(thunks: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of each thunk, run round-robin so that load from other
    processes (shared machines) hits every method alike; the minimum is the least disturbed."""
    best = {name: float("inf") for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            start = time.perf_counter()
            thunk()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_model(name: str, b: int, t: int, k: int, repeats: int) -> list[dict]:
    cfg = get_model_config(name)
    params = init_params(cfg, jax.random.key(0))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    seqs_KxBxT1 = jax.random.randint(jax.random.key(1), (k, b, t + 1), 0, cfg.vocab_size)
    apply_fn = lambda p, seqs: apply(cfg, p, seqs[:, :-1])  # noqa: E731
    micro_loss = lambda p, seqs: cross_entropy(apply_fn(p, seqs), seqs)  # noqa: E731

    adamw = optax.adamw(1e-3)

    def adamw_steps(params, opt_state, seqs):
        def body(carry, mb):
            p, s = carry
            grads = jax.grad(micro_loss)(p, mb)
            updates, s = adamw.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (params, opt_state), seqs)[0]

    def forward_only(params, seqs):
        return jax.lax.map(lambda mb: micro_loss(params, mb), seqs).mean()

    staged = StagedModel(lambda seqs: seqs[:, :-1], stages(cfg))
    layerwise = layerwise_gauss_newton
    methods = {
        "gauss_newton": gauss_newton,
        "gn_prox_linear": gn_prox_linear,
        "layerwise_gn": functools.partial(layerwise, staged=staged),
        "layerwise_prox_linear": functools.partial(
            layerwise, objective="prox_linear", staged=staged
        ),
        "layerwise_gn (generic)": layerwise,
        "layerwise_prox_linear (generic)": functools.partial(layerwise, objective="prox_linear"),
    }
    thunks, memory = {}, {}
    args = (params, adamw.init(params), seqs_KxBxT1)
    thunks["adamw micro-step"], *memory["adamw micro-step"] = compiled(adamw_steps, args)
    fwd_args = (params, seqs_KxBxT1)
    thunks["forward only (line search)"], *memory["forward only (line search)"] = compiled(
        forward_only, fwd_args
    )
    for method, factory in methods.items():
        tx = factory(apply_fn, cross_entropy, inner=optax.adamw(1e-3), inner_steps=k)

        def outer(params, state, seqs, tx=tx):
            return tx.update(None, state, params, batch=seqs)

        args = (params, tx.init(params), seqs_KxBxT1)
        thunks[method], *memory[method] = compiled(outer, args)

    seconds = interleaved_min(thunks, repeats)
    base = seconds["adamw micro-step"]
    rows = []
    for method, sec in seconds.items():
        temp, arg = memory[method]
        full = FULL_OF.get(method.split(" ")[0])
        rows.append(
            dict(
                model=name,
                params=n_params,
                method=method,
                cost=sec / base,
                vs_full=sec / seconds[full] if full else float("nan"),
                ms=1e3 * sec / k,
                temp=temp,
                arg=arg,
            )
        )
    return rows


def breakdown(name: str, b: int, t: int, repeats: int) -> list[tuple[str, int, float]]:
    """Where a staged layerwise inner step's time goes, on one micro-batch: rows ``(piece,
    times per inner step, ms each)``: the forward, each stage's parameter JVP/VJP (once, for its
    own block) and input JVP/VJP (once per block before it), the output-space product (once per
    block); then the total they add up to, the measured staged and full GN inner objectives."""
    cfg = get_model_config(name)
    params = init_params(cfg, jax.random.key(0))
    seqs = jax.random.randint(jax.random.key(1), (b, t + 1), 0, cfg.vocab_size)
    apply_fn = lambda p, s: apply(cfg, p, s[:, :-1])  # noqa: E731
    staged = StagedModel(lambda s: s[:, :-1], stages(cfg))
    labels = transformer_blocks(params)
    leaves, treedef = jax.tree.flatten(params)
    groups = check_stages(staged, labels, treedef)
    outputs, maps = linearize_stages(staged, params, seqs, groups)  # eager: residuals as arrays
    delta = jax.tree.map(lambda x: 1e-2 * jnp.ones_like(x), params)
    pieces: dict[str, tuple[int, Callable]] = {}
    pieces["forward"] = (1, compiled(apply_fn, (params, seqs))[0])
    rule = lambda z, u: gn_output_rule(cross_entropy, z, u, seqs)  # noqa: E731
    pieces["output-space product"] = (len(maps), compiled(rule, (outputs, outputs))[0])
    for c, ((stage, _), m) in enumerate(zip(staged.stages, maps, strict=True)):
        d = [leaves[i] * 1e-2 for i in groups[stage]]
        w = jnp.ones(m.out.shape, m.out.dtype)
        run = lambda f, x, method, out=m.out: getattr(StageMaps(f, out), method)(x)  # noqa: E731
        calls = [("param_jvp", d, 1), ("param_vjp", w, 1)]
        if c:
            calls += [("input_jvp", jnp.ones(maps[c - 1].out.shape), c), ("input_vjp", w, c)]
        for method, x, times in calls:
            thunk = compiled(functools.partial(run, method=method), (m.vjp_fn, x))[0]
            pieces[f"{stage} {method.replace('_', ' ')}"] = (times, thunk)
    full = lambda p, dl: linearized_model_eval(apply_fn, cross_entropy, p, seqs, dl)  # noqa: E731
    lw = lambda p, dl: staged_model_eval(  # noqa: E731
        staged, cross_entropy, p, seqs, dl, block_labels=labels
    )
    totals = {
        "measured: staged layerwise objective": compiled(lw, (params, delta))[0],
        "measured: full GN objective": compiled(full, (params, delta))[0],
    }
    seconds = interleaved_min({**{k: v[1] for k, v in pieces.items()}, **totals}, repeats)
    rows = [(piece, times, 1e3 * seconds[piece]) for piece, (times, _) in pieces.items()]
    model_ms = sum(times * ms for _, times, ms in rows)
    rows.append(("sum of the pieces (cost model)", 1, model_ms))
    rows += [(k, 1, 1e3 * seconds[k]) for k in totals]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--micro-batch", type=int, default=16, help="b: sequences per micro-batch")
    parser.add_argument("--seq-len", type=int, default=64, help="T: tokens per sequence")
    parser.add_argument("--k", type=int, default=4, help="K: micro-batches per outer step")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (fastest reported)")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the pieces of a layerwise inner step"
    )
    args = parser.parse_args()

    print(
        f"backend={jax.default_backend()} devices={jax.device_count()} b={args.micro_batch} "
        f"T={args.seq_len} K={args.k} repeats={args.repeats} (fastest, round-robin)\n"
    )
    print(
        "| model | params | method | cost (AdamW micro-steps) | / full GN | ms / step | temp MB "
        "| args MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for r in bench_model(name, args.micro_batch, args.seq_len, args.k, args.repeats):
            print(
                f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['method']} | {r['cost']:.2f} | "
                f"{r['vs_full']:.2f} | {r['ms']:.1f} | {r['temp']:.1f} | {r['arg']:.1f} |",
                flush=True,
            )

    if not args.breakdown:
        return
    print("\n| model | piece | per inner step | ms each | ms per inner step |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for piece, times, ms in breakdown(name, args.micro_batch, args.seq_len, args.repeats):
            print(f"| {name} | {piece} | {times} | {ms:.2f} | {times * ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
