"""Numerical checks of the accelerator check: gnbench's optimizers on the device against float64
references that run on the host in plain NumPy.

- SOAP against its NumPy port (``tests/optim/soap_numpy.py``), step for step;
- Muon against its NumPy port of KellerJordan/Muon (``tests/optim/muon_numpy.py``);
- GN: the GN-vector product against ``J^T H_z J v`` with ``J`` by central differences of a NumPy
  MLP and ``H_z`` the softmax covariance, and a long GN inner solve against the damped GN step
  ``-(G + lambda I)^{-1} J^T g`` from ``numpy.linalg.solve``.

Each runs in float32 on the default device and, where the backend has float64, again in float64
(``jax.enable_x64``); each reports its relative error and the tolerance it must meet.

Example:
  >>> results = run_all()                                  # doctest: +SKIP
  >>> all(r["passed"] for r in results if r["passed"] is not None)   # doctest: +SKIP
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnbench.optim import precision
from gnbench.optim.first_order.muon import muon
from gnbench.optim.first_order.soap import soap
from gnbench.optim.gn.curvature import gn_vector_product
from gnbench.optim.gn.gauss_newton import gauss_newton
from tests.optim.muon_numpy import NumpyMuonWithAuxAdam
from tests.optim.soap_numpy import NumpySoap

# Tolerances on the relative error (see each check). float32 ones leave ~10x headroom over what
# CPU (exact float32 matmuls) measures; TF32 or bfloat16 matmuls where float32 is pinned fail them.
TOLERANCES = {
    ("soap", "float32"): 2e-4,
    ("soap", "float64"): 1e-9,
    ("muon", "float64"): 1e-6,
    ("gn_vector_product", "float32"): 1e-5,
    ("gn_vector_product", "float64"): 1e-8,
    ("gn_inner_solve", "float32"): 1e-4,
    ("gn_inner_solve", "float64"): 1e-8,
}


def muon_tolerance(dtype: str) -> float:
    """Muon's float32 tolerance follows its Newton-Schulz dtype (bfloat16 as the reference)."""
    if dtype == "float64":
        return TOLERANCES[("muon", "float64")]
    ns = precision.newton_schulz_dtype(jnp.float32)
    return 0.1 if ns == jnp.bfloat16 else 1e-4


def relative_error(got: dict, want: dict, start: dict) -> float:
    """``||got - want|| / ||want - start||`` over a dict of arrays: error relative to the move."""
    num = sum(np.sum((np.asarray(got[k], np.float64) - want[k]) ** 2) for k in want)
    den = sum(np.sum((want[k] - start[k]) ** 2) for k in want)
    return float(np.sqrt(num / den))


def check_soap(dtype: Any, steps: int = 16) -> float:
    """SOAP's parameters after ``steps`` updates vs the float64 port. Shapes whose statistics are
    full rank from the first gradient (a rank-deficient one has no unique eigenbasis)."""
    shapes = {"a": (6, 8, 10), "b": (12, 64)}
    kwargs = dict(precondition_frequency=4, max_precond_dim=32, weight_decay=0.01)
    lr, rng = 0.02, np.random.default_rng(0)
    start = {k: rng.normal(size=s) for k, s in shapes.items()}
    refs = {k: NumpySoap(s, lr=lr, **kwargs) for k, s in shapes.items()}
    want = dict(start)
    tx = soap(lr, **kwargs)
    got = {k: jnp.asarray(v, dtype) for k, v in start.items()}
    state, update = tx.init(got), jax.jit(tx.update)
    for _ in range(steps):
        grads = {k: rng.normal(size=s) for k, s in shapes.items()}
        want = {k: refs[k].step(grads[k], want[k]) for k in shapes}
        u, state = update({k: jnp.asarray(g, dtype) for k, g in grads.items()}, state, got)
        got = optax.apply_updates(got, u)
    return relative_error(got, want, start)


def check_muon(dtype: Any, steps: int = 16) -> float:
    """Muon on a least-squares matrix (plus an AdamW-routed embedding) vs the float64 port."""
    shape, rng = (48, 64), np.random.default_rng(1)  # Flax (in, out); the port takes (out, in).
    x, y = rng.normal(size=(128, shape[0])), rng.normal(size=(128, shape[1]))
    target = rng.normal(size=(12, 16))
    grad = {"w": lambda w: x.T @ (x @ w - y) / len(x), "embed": lambda e: e - target}
    start = {"w": 0.1 * rng.normal(size=shape), "embed": rng.normal(size=(12, 16))}
    hp = dict(lr=0.02, momentum=0.95, weight_decay=0.1, adam_lr=0.01, adam_weight_decay=0.05)
    tx = muon(
        hp["lr"],
        adam_learning_rate=hp["adam_lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        adam_b1=0.9,
        adam_b2=0.95,
        adam_eps=1e-10,
        adam_weight_decay=hp["adam_weight_decay"],
        labels=lambda _: {"w": "muon", "embed": "adam"},
    )
    ref = NumpyMuonWithAuxAdam({"w": True, "embed": False}, eps=1e-10, **hp)
    want = {"w": start["w"].T, "embed": start["embed"]}
    got = {k: jnp.asarray(v, dtype) for k, v in start.items()}
    state, update = tx.init(got), jax.jit(tx.update)
    for _ in range(steps):
        want = ref.step(
            want, {"w": grad["w"](want["w"].T).T, "embed": grad["embed"](want["embed"])}
        )
        grads = {k: jnp.asarray(grad[k](np.asarray(got[k], np.float64)), dtype) for k in got}
        u, state = update(grads, state, got)
        got = optax.apply_updates(got, u)
    return relative_error(got, {"w": want["w"].T, "embed": want["embed"]}, start)


def _mlp_numpy(flat: np.ndarray, x: np.ndarray, sizes: tuple[int, int, int]) -> np.ndarray:
    d_in, hidden, d_out = sizes
    w1 = flat[: d_in * hidden].reshape(d_in, hidden)
    w2 = flat[d_in * hidden :].reshape(hidden, d_out)
    return np.tanh(x @ w1) @ w2


def gn_problem(seed: int = 2, n: int = 64, sizes=(16, 32, 10)):
    """A tanh MLP with cross-entropy on random labels, and its dense float64 GN terms."""
    rng = np.random.default_rng(seed)
    d_in, hidden, d_out = sizes
    flat = np.concatenate(
        [rng.normal(size=d_in * hidden) / np.sqrt(d_in), rng.normal(size=hidden * d_out) / 4]
    )
    x, labels = rng.normal(size=(n, d_in)), rng.integers(0, d_out, n)
    h = 1e-5  # Central differences: O(h^2) truncation, ~1e-11 rounding.
    jac = np.stack(
        [
            (_mlp_numpy(flat + h * e, x, sizes) - _mlp_numpy(flat - h * e, x, sizes)).ravel()
            / (2 * h)
            for e in np.eye(flat.size)
        ],
        axis=1,
    )
    z = _mlp_numpy(flat, x, sizes)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    hess = np.zeros((z.size, z.size))
    for i in range(n):  # Mean cross-entropy: H_z = blockdiag(diag(p_i) - p_i p_i^T) / n.
        s = slice(i * d_out, (i + 1) * d_out)
        hess[s, s] = (np.diag(p[i]) - np.outer(p[i], p[i])) / n
    grad_z = ((p - np.eye(d_out)[labels]) / n).ravel()
    return flat, x, labels, sizes, jac, hess, grad_z


def _jax_mlp(sizes):
    d_in, hidden, _ = sizes

    def apply_fn(params, batch):
        return jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"]

    def loss_fn(z, batch):
        logp = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))

    def unflatten(flat, dtype):
        w1 = flat[: d_in * hidden].reshape(d_in, hidden)
        return {"w1": jnp.asarray(w1, dtype), "w2": jnp.asarray(flat[d_in * hidden :], dtype)}

    return apply_fn, loss_fn, unflatten


def _flat(tree: dict) -> np.ndarray:
    return np.concatenate([np.asarray(tree["w1"], np.float64).ravel(), tree["w2"].ravel()])


def check_gn_vector_product(dtype: Any) -> float:
    """``||G v - J^T H_z J v|| / ||J^T H_z J v||`` with the dense float64 terms."""
    flat, x, labels, sizes, jac, hess, _ = gn_problem()
    apply_fn, loss_fn, unflatten = _jax_mlp(sizes)
    _, hidden, d_out = sizes
    v = np.random.default_rng(3).normal(size=flat.size)
    params = unflatten(flat, dtype)
    params["w2"] = params["w2"].reshape(hidden, d_out)
    tangent = unflatten(v, dtype)
    tangent["w2"] = tangent["w2"].reshape(hidden, d_out)
    batch = {"x": jnp.asarray(x, dtype), "y": jnp.asarray(labels)}
    product = jax.jit(lambda p, b, t: gn_vector_product(apply_fn, loss_fn, p, b, t))
    got = _flat(jax.device_get(product(params, batch, tangent)))
    want = jac.T @ hess @ jac @ v
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def check_gn_inner_solve(dtype: Any, steps: int = 60, damping: float = 0.5) -> float:
    """GN with ``steps`` SGD inner steps on one micro-batch vs the damped GN step (solve); the
    inner problem has condition number ~2, so 60 steps converge to rounding."""
    flat, x, labels, sizes, jac, hess, grad_z = gn_problem(seed=4)
    apply_fn, loss_fn, unflatten = _jax_mlp(sizes)
    _, hidden, d_out = sizes
    gn = jac.T @ hess @ jac
    want = -np.linalg.solve(gn + damping * np.eye(flat.size), jac.T @ grad_z)
    lr = 1.0 / (np.linalg.eigvalsh(gn).max() + damping)
    tx = gauss_newton(
        apply_fn, loss_fn, inner=optax.sgd(lr), inner_steps=steps, damping=damping, warm_start=False
    )
    params = unflatten(flat, dtype)
    params["w2"] = params["w2"].reshape(hidden, d_out)
    batch = {"x": jnp.asarray(np.broadcast_to(x, (steps, *x.shape)), dtype)}
    batch["y"] = jnp.asarray(np.broadcast_to(labels, (steps, *labels.shape)))
    step = jax.jit(lambda p, s, b: tx.update(None, s, p, batch=b)[0])
    got = _flat(jax.device_get(step(params, tx.init(params), batch)))
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


CHECKS: dict[str, Callable[[Any], float]] = {
    "soap": check_soap,
    "muon": check_muon,
    "gn_vector_product": check_gn_vector_product,
    "gn_inner_solve": check_gn_inner_solve,
}


def matmul_errors(n: int = 256) -> dict[str, float]:
    """Relative error of an ``n x n`` float32 matmul on the device vs float64, per precision:
    shows what the backend does with float32 by default (TF32/bfloat16 passes or not)."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    want = a @ b
    out = {}
    for name in ("default", "highest"):
        with jax.default_matmul_precision(name):
            got = jax.jit(jnp.matmul)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        out[name] = float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))
    return out


def enable_x64() -> Any:
    """``jax.enable_x64(True)``, or its older ``jax.experimental`` spelling."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as older

    return older(True)


def run_all(run: Callable[[str, Callable[[], Any]], Any] | None = None) -> list[dict[str, Any]]:
    """Every check in float32, then float64 where the backend has it.

    Args:
      run: ``run(label, thunk)`` runs a check under the caller's time guard; ``None`` runs it.

    Returns:
      One dict per check and dtype: ``name, dtype, rel_error, tolerance, passed`` (``passed``
      is ``None`` and ``skipped`` says why when the check could not run).
    """
    run = run or (lambda _, thunk: thunk())
    results = []
    for dtype_name in ("float32", "float64"):
        for name, check in CHECKS.items():
            tol = muon_tolerance(dtype_name) if name == "muon" else TOLERANCES[(name, dtype_name)]
            entry = dict(name=name, dtype=dtype_name, tolerance=tol, rel_error=None, passed=None)
            try:
                if dtype_name == "float64":
                    with enable_x64():
                        err = run(f"{name}/{dtype_name}", lambda c=check: c(jnp.float64))
                else:
                    err = run(f"{name}/{dtype_name}", lambda c=check: c(jnp.float32))
            except Exception as e:  # noqa: BLE001 (a backend without float64, or a time guard)
                if dtype_name == "float32" and not getattr(e, "budget", False):
                    raise
                entry["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            else:
                entry.update(rel_error=err, passed=bool(np.isfinite(err) and err <= tol))
            results.append(entry)
    return results


__all__ = ["CHECKS", "TOLERANCES", "matmul_errors", "muon_tolerance", "run_all"]
