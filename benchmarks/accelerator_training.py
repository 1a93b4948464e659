"""Training part of the accelerator check: a few AdamW steps of warm-up, then every method
continues from the same parameters for a few outer iterations, on an offline corpus.

The corpus is the text of this Python's standard-library ``.py`` sources (nothing downloaded),
tokenized to bytes; the last 5% is held out. Each method gets the same sequence of sampling
seeds; methods run at their own micro-batch (the one measured), so the curves record tokens.

Example:
  >>> tokens, source = stdlib_corpus(1 << 16)
  >>> int(tokens.max()) < 256
  True
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

import jax
import numpy as np
from accelerator_setup import Budget, BudgetExceeded, Step

from gnbench.model import ModelConfig, init_params
from gnbench.model.sharding import batch_sharding
from gnbench.train.state import lm_fns
from gnbench.train.step import make_eval_step


def stdlib_corpus(max_bytes: int) -> tuple[np.ndarray, str]:
    """Byte tokens (int32) of the standard library's ``.py`` files, in path order, up to
    ``max_bytes``; and where they came from."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data[: max_bytes - size])
        size += len(chunks[-1])
        if size >= max_bytes:
            break
    if size < 1 << 12:
        raise RuntimeError(f"only {size} bytes of .py sources under {root}")
    tokens = np.frombuffer(b"".join(chunks), np.uint8).astype(np.int32)
    return tokens, f"{size} bytes of {root}/**/*.py (byte tokens)"


def sample(tokens: np.ndarray, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """``shape = (K, b, T+1)`` windows of ``tokens`` at random offsets."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - shape[-1], size=shape[:-1])
    return tokens[starts[..., None] + np.arange(shape[-1])]


def train_curves(
    steps: dict[str, Step],
    model_cfg: ModelConfig,
    mesh: jax.sharding.Mesh,
    *,
    corpus_bytes: int,
    warmup_steps: int,
    iterations: int,
    val_batches: int,
    budget: Budget,
    step_seconds: dict[str, float],
) -> dict[str, Any]:
    """Warm-up with ``steps["adamw"]``, then ``iterations`` outer iterations of each method.

    ``step_seconds`` (each method's measured step time) lets the time guard skip a method whose
    iterations would overrun the budget.

    Returns the warm-up losses, the validation loss after warm-up, and per method a curve of
    ``{iteration, tokens, train_loss, val_loss}`` (``skipped`` instead when the budget ran out).
    """
    tokens, source = stdlib_corpus(corpus_bytes)
    cut = int(0.95 * len(tokens))
    train, held_out = tokens[:cut], tokens[cut:]
    sharding = batch_sharding(mesh, batch_axis=1, ndim=3)
    adam = steps["adamw"]
    apply_fn, loss_fn = lm_fns(model_cfg)
    evaluate = make_eval_step(apply_fn, loss_fn, adam.shardings.params, sharding)
    b_val = min(adam.micro_batch, 8)
    val = jax.device_put(sample(held_out, (val_batches, b_val, adam.seq_len + 1), 10**6), sharding)

    def batches(step: Step, seed: int) -> list[jax.Array]:
        shape = (step.k, step.micro_batch, step.seq_len + 1)
        return [
            jax.device_put(sample(train, shape, seed * 7 + j), sharding)
            for j in range(step.n_batches)
        ]

    params0 = jax.device_get(init_params(model_cfg, jax.random.key(0)))
    state = adam.init_state(params0)
    warm_losses = []
    for i in range(warmup_steps):
        state, metrics = adam.compiled(state, *batches(adam, 10**5 + i))
        warm_losses.append(float(metrics["loss"]))
    warm = jax.device_get(state.params)
    del state
    out: dict[str, Any] = dict(
        corpus=source,
        train_tokens=int(len(train)),
        val_tokens_per_eval=int(val_batches * b_val * adam.seq_len),
        warmup_losses=warm_losses,
        val_loss_after_warmup=float(evaluate(jax.device_put(warm, adam.shardings.params), val)),
        methods={},
    )
    for name, step in steps.items():
        try:
            budget.check(f"training {name}", 2 * iterations * step_seconds[name])
        except BudgetExceeded as e:
            out["methods"][name] = dict(skipped=str(e))
            continue
        state, curve = step.init_state(warm), []
        for i in range(iterations):
            state, metrics = step.compiled(state, *batches(step, i))
            curve.append(
                dict(
                    iteration=i + 1,
                    tokens=(i + 1) * step.k * step.micro_batch * step.seq_len,
                    train_loss=float(metrics["loss"]),
                    val_loss=float(evaluate(state.params, val)),
                )
            )
        out["methods"][name] = dict(micro_batch=step.micro_batch, k=step.k, curve=curve)
        del state
    return out


__all__ = ["sample", "stdlib_corpus", "train_curves"]
