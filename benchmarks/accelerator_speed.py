"""Speed part of the accelerator check: the device's matmul peaks, and each method's step at the
largest micro-batch that fits (step time, tokens/s, XLA FLOPs, achieved fraction of peak, memory).

Example:
  >>> peaks = matmul_peaks(256, repeats=3)                  # doctest: +SKIP
  >>> sorted(peaks)                                         # doctest: +SKIP
  ['bfloat16', 'float32_default', 'float32_highest']
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from accelerator_setup import Budget, Step, build_step, is_oom

from gnbench.model import ModelConfig
from gnbench.model.sharding import batch_sharding

PEAKS = {  # name -> (operand dtype, matmul precision)
    "bfloat16": (jnp.bfloat16, "default"),
    "float32_highest": (jnp.float32, "highest"),
    "float32_default": (jnp.float32, "default"),
}


def seconds(thunk: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` runs of ``thunk`` (each waits for its result)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(thunk())
        out.append(time.perf_counter() - start)
    return out


def matmul_peaks(n: int, repeats: int) -> dict[str, float]:
    """FLOP/s of an ``n x n`` matmul per :data:`PEAKS` entry (fastest of ``repeats``), on the
    default device, measured in this process."""
    out = {}
    for name, (dtype, prec) in PEAKS.items():
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        with jax.default_matmul_precision(prec):
            mm = jax.jit(lambda x: x @ x).lower(a).compile()
        jax.block_until_ready(mm(a))
        out[name] = 2 * n**3 / min(seconds(lambda mm=mm, a=a: mm(a), repeats))
    return out


def random_batches(step: Step, mesh: jax.sharding.Mesh, vocab: int, seed: int) -> list[jax.Array]:
    """The step's batches (K micro-batches, and K more for a fresh line search) of random tokens."""
    rng = np.random.default_rng(seed)
    shape = (step.k, step.micro_batch, step.seq_len + 1)
    sharding = batch_sharding(mesh, batch_axis=1, ndim=3)
    return [
        jax.device_put(rng.integers(0, vocab, shape, dtype=np.int32), sharding)
        for _ in range(step.n_batches)
    ]


def fit_step(
    name: str,
    model_cfg: ModelConfig,
    mesh: jax.sharding.Mesh,
    *,
    micro_batches: list[int],
    seq_len: int,
    k: int,
    budget: Budget,
    estimate_s: float,
) -> tuple[Step | None, Any, list[dict[str, Any]]]:
    """The step at the largest of ``micro_batches`` (descending) that compiles and runs.

    Returns ``(step, state after one step, attempts)``; ``step`` is ``None`` if none fits.
    """
    attempts = []
    for b in micro_batches:
        budget.check(f"{name} at micro-batch {b}", estimate_s)
        state = None
        try:
            step, state = build_step(
                name, model_cfg, mesh, micro_batch=b, seq_len=seq_len, k=k, total_steps=1000
            )
            state, metrics = step.compiled(
                state, *random_batches(step, mesh, model_cfg.vocab_size, 0)
            )
            jax.block_until_ready(metrics)
        except Exception as e:  # noqa: BLE001 (XLA reports OOM as a runtime error)
            if not is_oom(e):
                raise
            attempts.append(dict(micro_batch=b, result="out of memory"))
            del state
            gc.collect()
            continue
        attempts.append(dict(micro_batch=b, result="fits"))
        return step, state, attempts
    return None, None, attempts


def device_peak_bytes(device: Any) -> int | str:
    """The device's ``peak_bytes_in_use`` (high-water mark of this process), or ``"n/a"``."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        stats = None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else "n/a"


def measure(
    step: Step,
    state: Any,
    mesh: jax.sharding.Mesh,
    vocab: int,
    repeats: int,
    peaks: dict[str, float],
) -> tuple[dict[str, Any], Any]:
    """Times ``repeats`` steps after the first; returns the measurements and the final state."""
    batches = random_batches(step, mesh, vocab, 1)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step.compiled(holder["state"], *batches)  # Donated state.
        return holder["state"], metrics

    times = seconds(run, repeats)
    median = statistics.median(times)
    loss = float(run()[1]["loss"])
    train_tokens = step.k * step.micro_batch * step.seq_len
    out = dict(
        micro_batch=step.micro_batch,
        k=step.k,
        seq_len=step.seq_len,
        compile_s=step.compile_s,
        step_s_median=median,
        step_s_all=times,
        train_tokens_per_s=train_tokens / median,
        read_tokens_per_s=train_tokens * step.n_batches / median,
        loss_after=loss,
        xla_memory_bytes=step.memory or "n/a",
        process_peak_bytes=device_peak_bytes(mesh.devices.flat[0]),
    )
    if step.flops is None:
        out.update(step_flops="n/a", flop_per_s="n/a", fraction_of_peak="n/a")
    else:
        rate = step.flops / median
        out.update(
            step_flops=step.flops,
            flop_per_s=rate,
            fraction_of_peak={name: rate / peak for name, peak in peaks.items()},
        )
    return out, holder["state"]


def measure_all(
    methods: tuple[str, ...],
    model_cfg: ModelConfig,
    mesh: jax.sharding.Mesh,
    *,
    micro_batches: list[int],
    seq_len: int,
    k: int,
    repeats: int,
    peaks: dict[str, float],
    budget: Budget,
) -> tuple[dict[str, dict[str, Any]], dict[str, Step]]:
    """Measures each method; returns the measurements and the compiled steps (for training).

    The time guard skips a method when the slowest one so far, doubled, would overrun.
    """
    results, steps, slowest = {}, {}, 0.0
    for name in methods:
        start = time.perf_counter()
        try:
            step, state, attempts = fit_step(
                name,
                model_cfg,
                mesh,
                micro_batches=micro_batches,
                seq_len=seq_len,
                k=k,
                budget=budget,
                estimate_s=2 * slowest,
            )
        except Exception as e:
            if not getattr(e, "budget", False):
                raise
            results[name] = dict(skipped=str(e))
            continue
        if step is None:
            results[name] = dict(skipped="no micro-batch fits", attempts=attempts)
            continue
        results[name], state = measure(step, state, mesh, model_cfg.vocab_size, repeats, peaks)
        results[name]["attempts"] = attempts
        del state
        gc.collect()
        steps[name] = step
        slowest = max(slowest, time.perf_counter() - start)
    return results, steps


__all__ = ["PEAKS", "device_peak_bytes", "fit_step", "matmul_peaks", "measure", "measure_all"]
