"""A plain NumPy float64 SOAP for one parameter, written from the algorithm (arXiv 2409.11321 and
the authors' step order), to check :mod:`gnbench.optim.first_order.soap` against.

Deliberately different in form from the JAX code: each axis is handled by moving it to the
front and flattening the rest into a matrix, so ``C_i(G) = M M^T`` and a rotation is ``Q^T M``.
"""

from __future__ import annotations

import numpy as np


def merge(shape: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """Adjacent axes merged while the product stays ``<= limit``."""
    out, run = [], 1
    for d in shape:
        if run * d <= limit:
            run *= d
        elif run > 1:
            out.append(run)
            run = d
        else:
            out.append(d)
    if run > 1 or not out:
        out.append(run)
    return tuple(out)


def _unfold(x: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _fold(m: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    moved = (shape[axis],) + tuple(d for i, d in enumerate(shape) if i != axis)
    return np.moveaxis(m.reshape(moved), 0, axis)


class NumpySoap:
    """SOAP on one parameter; ``step(grad, param) -> new param`` (float64 throughout)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        lr: float = 3e-3,
        b1: float = 0.95,
        b2: float = 0.95,
        shampoo_beta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        correct_bias: bool = True,
    ):
        self.shape = tuple(shape)
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, weight_decay
        self.sb = b2 if shampoo_beta is None else shampoo_beta
        self.freq = precondition_frequency
        self.normalize, self.correct_bias = normalize_grads, correct_bias
        if len(self.shape) == 1:
            self.work = self.shape
            self.rot = [precondition_1d and self.shape[0] <= max_precond_dim]
        else:
            self.work = merge(self.shape, max_precond_dim) if merge_dims else self.shape
            self.rot = [d <= max_precond_dim for d in self.work]
        self.L = [np.zeros((d, d)) if r else None for d, r in zip(self.work, self.rot, strict=True)]
        self.Q = [None] * len(self.work)
        self.m = np.zeros(self.work)
        self.v = np.zeros(self.work)
        self.t = -1  # Adam step; -1 until the first call has set the bases.

    def _accumulate(self, g: np.ndarray) -> None:
        for i in range(len(self.work)):
            if self.rot[i]:
                u = _unfold(g, i)
                self.L[i] = self.sb * self.L[i] + (1 - self.sb) * (u @ u.T)

    def _rotate(self, x: np.ndarray, back: bool) -> np.ndarray:
        for i in range(len(self.work)):
            if self.rot[i]:
                q = self.Q[i] if back else self.Q[i].T
                x = _fold(q @ _unfold(x, i), i, self.work)
        return x

    def step(self, grad: np.ndarray, param: np.ndarray) -> np.ndarray:
        g = np.asarray(grad, np.float64).reshape(self.work)
        p = np.asarray(param, np.float64)
        if self.t < 0:
            self._accumulate(g)
            for i in range(len(self.work)):
                if self.rot[i]:
                    w, vecs = np.linalg.eigh(self.L[i])
                    self.Q[i] = vecs[:, np.argsort(-w)]
            self.t = 0
            return p
        self.t += 1
        gr = self._rotate(g, back=False)
        self.m = self.b1 * self.m + (1 - self.b1) * gr
        self.v = self.b2 * self.v + (1 - self.b2) * gr * gr
        n = self._rotate(self.m / (np.sqrt(self.v) + self.eps), back=True)
        if self.normalize:
            n = n / (1e-30 + np.sqrt(np.mean(n * n)))
        size = self.lr
        if self.correct_bias:
            size *= np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        p = p - size * n.reshape(self.shape)
        p = p - self.lr * self.wd * p
        self._accumulate(g)
        if self.t % self.freq == 0:
            m_orig = self._rotate(self.m, back=True)
            for i in range(len(self.work)):
                if not self.rot[i]:
                    continue
                L, Q = self.L[i], self.Q[i]
                lam = np.array([Q[:, j] @ L @ Q[:, j] for j in range(Q.shape[1])])
                perm = np.argsort(-lam, kind="stable")
                self.v = np.take(self.v, perm, axis=i)
                self.Q[i] = np.linalg.qr(L @ Q[:, perm])[0]
            self.m = self._rotate(m_orig, back=False)
        return p
