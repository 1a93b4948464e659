"""A plain NumPy float64 port of the reference Muon (https://github.com/KellerJordan/Muon,
``muon.py``), to check :mod:`gnbench.optim.first_order.muon` against.

Ported line by line from the reference's ``zeropower_via_newtonschulz5``, ``muon_update``,
``adam_update`` and ``SingleDeviceMuonWithAuxAdam.step``, in the reference's PyTorch layout:
a weight is ``(out, in)``, so a Flax ``(in, out)`` kernel is passed transposed. In-place torch
ops are written out (``a.lerp_(b, w)`` is ``a + w*(b - a)``); float64 throughout, where the
reference runs Newton-Schulz in bfloat16.
"""

from __future__ import annotations

import numpy as np


def lerp(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """torch's ``a.lerp(b, weight) = a + weight * (b - a)``."""
    return a + weight * (b - a)


def zeropower_via_newtonschulz5(g: np.ndarray, steps: int) -> np.ndarray:
    assert g.ndim >= 2
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = np.array(g, dtype=np.float64)
    if g.shape[-2] > g.shape[-1]:
        x = np.swapaxes(x, -2, -1)
    x = x / (np.linalg.norm(x, axis=(-2, -1), keepdims=True) + 1e-7)
    for _ in range(steps):
        big_a = x @ np.swapaxes(x, -2, -1)
        big_b = b * big_a + c * big_a @ big_a
        x = a * x + big_b @ x
    if g.shape[-2] > g.shape[-1]:
        x = np.swapaxes(x, -2, -1)
    return x


def muon_update(
    grad: np.ndarray,
    momentum: np.ndarray,
    beta: float = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(update, new_momentum)`` (the reference mutates ``momentum`` and ``grad``)."""
    momentum = lerp(momentum, grad, 1 - beta)
    update = lerp(grad, momentum, beta) if nesterov else momentum
    if update.ndim == 4:
        update = update.reshape(len(update), -1)
    update = zeropower_via_newtonschulz5(update, steps=ns_steps)
    update = update * max(1, grad.shape[-2] / grad.shape[-1]) ** 0.5
    return update, momentum


def adam_update(grad, buf1, buf2, step, betas, eps):
    """Returns ``(update, buf1, buf2)``."""
    buf1 = lerp(buf1, grad, 1 - betas[0])
    buf2 = lerp(buf2, grad**2, 1 - betas[1])
    buf1c = buf1 / (1 - betas[0] ** step)
    buf2c = buf2 / (1 - betas[1] ** step)
    return buf1c / (np.sqrt(buf2c) + eps), buf1, buf2


class NumpyMuonWithAuxAdam:
    """``SingleDeviceMuonWithAuxAdam`` on a dict ``name -> (out, in) weight``.

    Args:
      use_muon: ``name -> bool``; Muon for True, Adam for False.
      lr, momentum, weight_decay: the Muon group's (the reference's defaults 0.02, 0.95, 0).
      adam_lr, betas, eps, adam_weight_decay: the Adam group's.
      nesterov: ``muon_update``'s flag (the reference's optimizer always uses its default True).
    """

    def __init__(
        self,
        use_muon: dict[str, bool],
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        adam_lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-10,
        adam_weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
    ):
        self.use_muon = use_muon
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.adam_lr, self.betas, self.eps = adam_lr, betas, eps
        self.adam_weight_decay = adam_weight_decay
        self.nesterov, self.ns_steps = nesterov, ns_steps
        self.state: dict[str, dict] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> dict:
        new = {}
        for name, p in params.items():
            p = np.array(p, dtype=np.float64)
            g = np.asarray(grads[name], dtype=np.float64)
            state = self.state.setdefault(name, {})
            if self.use_muon[name]:
                if not state:
                    state["momentum_buffer"] = np.zeros_like(p)
                update, state["momentum_buffer"] = muon_update(
                    g,
                    state["momentum_buffer"],
                    beta=self.momentum,
                    ns_steps=self.ns_steps,
                    nesterov=self.nesterov,
                )
                p = p * (1 - self.lr * self.weight_decay)
                p = p - self.lr * update.reshape(p.shape)
            else:
                if not state:
                    state["exp_avg"] = np.zeros_like(p)
                    state["exp_avg_sq"] = np.zeros_like(p)
                    state["step"] = 0
                state["step"] += 1
                update, state["exp_avg"], state["exp_avg_sq"] = adam_update(
                    g, state["exp_avg"], state["exp_avg_sq"], state["step"], self.betas, self.eps
                )
                p = p * (1 - self.adam_lr * self.adam_weight_decay)
                p = p - self.adam_lr * update
            new[name] = p
        return new
