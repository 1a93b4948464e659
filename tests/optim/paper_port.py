"""An independent port of the GN paper's outer loop, to check gnbench's build path against.

Abreu et al. 2025 (arXiv 2510.09378) ran full Gauss-Newton with
``EasyLM/models/llama/llama_train_gn.py`` of https://github.com/natalieabreu/full-gauss-newton
(``--gauss_newton=True``). This module re-implements, from reading that file and without
gnbench, the parts that decide θ:

* :func:`paper_schedule`: ``get_global_lr_sched`` (``--lr_sched``, ``--inner_loop_lr``,
  ``--total_steps``, ``--inner_loop_iter``, ``--global_warmup``, ``--inner_loop_warmup``,
  ``--end_lr``), built the way that function builds it, from optax schedules joined with
  ``optax.join_schedules`` at the same boundaries, off-by-one included;
* :func:`paper_solver`: ``build_optimizer`` (``--optimizer_type``, ``--inner_b1/b2``,
  ``--inner_clip_gradient``, ``--optimizer_wd``): a clipped optax AdamW, or a partition of a
  clipped AdamW (embedding, head) and a clipped ``optax.contrib.muon`` (everything else);
* :func:`paper_gn`: ``train_step_gauss_newton`` (the GN gradient ``Jᵀ(g + H J Δ)`` from
  ``jax.linearize`` / ``jax.linear_transpose``) and the loop of ``main``: one inner state kept
  across outer steps (``--reset_start=False``) or re-created at θ_t (``True``),
  ``--inner_loop_iter``
  inner steps on fresh micro-batches, then (``--linesearch``) the step sizes ``1/√2^i``,
  ``i < --ls_range``, on as many further micro-batches, the first smallest mean loss winning.

Two choices make a float64 comparison possible, neither changes an fp32 run: schedules are
evaluated at a float64 count (optax turns an int32 count into float32 arithmetic), and
``mu_dtype`` is an argument (theirs is float32, the parameters' dtype in their fp32 runs).
Not ported, because they do not change θ: ``--inner_loop_wd`` (its term in
``cross_entropy_loss_and_accuracy_with_weight_decay`` does not depend on the logits, so the GN
gradient never sees it), the weight average (``--weight_average`` only changes what is
evaluated), logging, checkpoints and sharding.

Example:
  >>> float(paper_schedule("constant", 0.1, total_steps=2, inner_loop_iter=3)(4))
  0.1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def _warmup_steps(warmup: float, span: int) -> int:
    """Their convention: a warm-up ``<= 1`` is a fraction of ``span``, larger is a count."""
    return int(warmup * span) if warmup <= 1.0 else int(warmup)


def paper_schedule(
    method: str,
    lr: float,
    total_steps: int,
    inner_loop_iter: int,
    global_warmup: float = 0.0,
    inner_warmup: float = 0.0,
    end_lr: float = 0.0,
) -> optax.Schedule:
    """``get_global_lr_sched``: the inner learning rate as a function of the inner count."""
    t, k = total_steps, inner_loop_iter
    if method == "global_cosine":
        sched = optax.warmup_cosine_decay_schedule(
            lr * 0.1, lr, _warmup_steps(global_warmup, t * k), t * k, end_lr
        )
    elif method in ("cosine_with_global_schedule", "constant_with_inner_cosine"):
        warmup, w_in = _warmup_steps(global_warmup, t), _warmup_steps(inner_warmup, k)
        if method == "cosine_with_global_schedule":
            envelope = optax.warmup_cosine_decay_schedule(lr * 0.1, lr, warmup, t, end_lr)
        else:
            envelope = optax.warmup_constant_schedule(lr if warmup == 0 else lr * 0.1, lr, warmup)
        cycles, boundaries = [], []
        for s in range(t):
            peak = envelope(s)
            cycles.append(optax.warmup_cosine_decay_schedule(peak * 0.1, peak, w_in, k, end_lr))
            # Their boundaries: s*K for the cosine envelope (all T of them, for T schedules),
            # (s+1)*K minus the last one for the constant envelope.
            boundaries.append(s * k if method == "cosine_with_global_schedule" else (s + 1) * k)
        if method == "constant_with_inner_cosine":
            boundaries = boundaries[:-1]
        sched = optax.join_schedules(cycles, boundaries)
    elif method == "constant":
        sched = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown method {method!r}")
    return lambda count: sched(jnp.asarray(count, jnp.float64))


def paper_labels(params: Any) -> Any:
    """``create_param_selector``: ``"adamw"`` for the embedding and the head, else ``"muon"``."""
    return {
        name: jax.tree.map(lambda _, n=name: "adamw" if n in ("embed", "head") else "muon", sub)
        for name, sub in params.items()
    }


def paper_solver(
    lr_sched: optax.Schedule,
    b1: float,
    b2: float,
    grad_clip: float,
    wd: float,
    optimizer_type: str,
    mu_dtype: Any = jnp.float32,
) -> optax.GradientTransformation:
    """``build_optimizer``: the inner solver, learning rate inside as theirs."""
    adamw = optax.adamw(lr_sched, b1=b1, b2=b2, mu_dtype=mu_dtype, weight_decay=wd)
    if optimizer_type == "adamw":
        return optax.chain(optax.clip_by_global_norm(grad_clip), adamw) if grad_clip else adamw
    if optimizer_type != "muon":
        raise ValueError(f"unknown optimizer_type {optimizer_type!r}")
    muon = optax.contrib.muon(
        learning_rate=lr_sched, adam_weight_decay=wd, adam_b1=b1, adam_b2=b2, mu_dtype=mu_dtype
    )
    # No off switch there: clip_by_global_norm(0) would zero every update.
    return optax.multi_transform(
        {
            "adamw": optax.chain(optax.clip_by_global_norm(grad_clip), adamw),
            "muon": optax.chain(optax.clip_by_global_norm(grad_clip), muon),
        },
        paper_labels,
    )


class PaperRun(NamedTuple):
    """θ after each outer step, the chosen step sizes and the inner-gradient norms.

    ``grad_norms[t][i]`` maps ``"all"`` and each label of :func:`paper_labels` to the norm of
    inner step ``i``'s gradient (before clipping) in outer step ``t``.
    """

    thetas: list[Any]
    step_sizes: list[float]
    grad_norms: list[list[dict[str, float]]]


def paper_gn(
    apply_fn: Callable[[Any, Any], jax.Array],
    loss_fn: Callable[[jax.Array, Any], jax.Array],
    params: Any,
    data: Sequence[tuple[Sequence[Any], Sequence[Any]]],
    *,
    solver: optax.GradientTransformation,
    linesearch: bool,
    ls_range: int,
    reset_start: bool,
) -> PaperRun:
    """The outer loop of their ``main`` with ``--gauss_newton=True``.

    Args:
      apply_fn: ``apply_fn(params, micro_batch) -> logits``.
      loss_fn: ``loss_fn(logits, micro_batch) -> mean loss``.
      params: θ_0.
      data: per outer step, (the inner solve's micro-batches, the line search's micro-batches).
      solver: :func:`paper_solver`'s transform.
      linesearch, ls_range, reset_start: their flags.
    """

    @jax.jit
    def inner_step(inner_params, opt_state, params0, batch):
        logits0, jvp_fn = jax.linearize(lambda p: apply_fn(p, batch), params0)
        v = jvp_fn(jax.tree.map(lambda x, y: x - y, inner_params, params0))
        grad_logits = jax.grad(lambda z: loss_fn(z, batch))
        g0 = grad_logits(logits0)
        _, hv = jax.jvp(grad_logits, (logits0,), (v,))
        (grads,) = jax.linear_transpose(jvp_fn, params0)(g0 + hv)
        updates, opt_state = solver.update(grads, opt_state, inner_params)
        labels = paper_labels(grads)
        norms = {"all": optax.tree.norm(grads)}
        for name in ("adamw", "muon"):
            masked = jax.tree.map(lambda g, lab, n=name: g * (lab == n), grads, labels)
            norms[name] = optax.tree.norm(masked)
        return optax.apply_updates(inner_params, updates), opt_state, norms

    loss_at = jax.jit(lambda p, batch: loss_fn(apply_fn(p, batch), batch))

    inner_params, opt_state = params, solver.init(params)
    thetas, step_sizes, grad_norms = [], [], []
    for inner_batches, ls_batches in data:
        if reset_start:
            inner_params, opt_state = params, solver.init(params)
        norms = []
        for batch in inner_batches:
            inner_params, opt_state, n = inner_step(inner_params, opt_state, params, batch)
            norms.append({key: float(value) for key, value in n.items()})
        if linesearch:
            direction = jax.tree.map(lambda x, y: x - y, inner_params, params)
            losses = []
            for step_size in [1 / jnp.sqrt(2) ** i for i in range(ls_range)]:
                trial = jax.tree.map(lambda x, y, a=step_size: x + a * y, params, direction)
                total = sum(loss_at(trial, batch) for batch in ls_batches)
                losses.append((step_size, total / len(ls_batches)))
            step_size, _ = min(losses, key=lambda x: x[1])
            params = jax.tree.map(lambda x, y, a=step_size: x + a * y, params, direction)
        else:
            step_size, params = 1.0, inner_params
        thetas.append(params)
        step_sizes.append(float(step_size))
        grad_norms.append(norms)
    return PaperRun(thetas, step_sizes, grad_norms)
