"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") from optax, as an
optimizer that lives outside gnbench: nothing here is registered, gnbench finds it by its entry.

    gnbench train --config examples/my_optimizers/lion_config.py
    gnbench ladder --method examples/my_optimizers/lion.py:lion \\
        --config examples/my_optimizers/lion_config.py --quick

Update (sign of an interpolated momentum; decoupled weight decay λ):

    u_t = sign(β₁ m_{t-1} + (1 − β₁) g_t);   m_t = β₂ m_{t-1} + (1 − β₂) g_t
    θ_{t+1} = θ_t − η_t (u_t + λ θ_t)

``lion`` reads its own section, ``optimizer.lion`` (``b1``, ``b2``, ``weight_decay``; the config
file adds it, see lion_config.py), and the shared keys every first-order method reads: the
learning rate ``optimizer.learning_rate`` under ``optimizer.schedule`` and ``grad_clip``. The
decorator declares the section (so a run's identity keeps it and every other method's runs drop
it) and checks its keys before anything is built.

Without a section of its own, the entry ``optax:lion`` runs optax's factory as it is (its
defaults for b1, b2 and weight decay), wrapped the same way.
"""

import optax

from gnbench.optim import BuildContext, Optimizer, outside_method
from gnbench.optim.checks import Checks
from gnbench.optim.registry import clip, outer_schedule


@outside_method(
    reads=("lion",),
    check=Checks(decays=("lion.b1", "lion.b2"), nonnegative_floats=("lion.weight_decay",)),
)
def lion(cfg, ctx: BuildContext) -> Optimizer:
    """Lion with ``optimizer.lion``'s b1, b2 and weight decay; the learning rate as AdamW's.

    Args:
      cfg: the run's ``optimizer`` config section.
      ctx: what the trainer knows besides (``total_steps`` for the schedule).

    Returns:
      The optimizer; its transform ignores ``batch=`` and ``ls_batch=`` (first-order).
    """
    lr = outer_schedule(cfg, cfg.learning_rate, ctx)

    @optax.inject_hyperparams  # The learning rate in use lives in the state and is logged.
    def make(learning_rate):
        return optax.chain(
            clip(cfg.grad_clip),
            optax.lion(
                learning_rate,
                b1=cfg.lion.b1,
                b2=cfg.lion.b2,
                weight_decay=cfg.lion.weight_decay,
            ),
        )

    return Optimizer(
        tx=optax.with_extra_args_support(make(lr)),
        hparams=dict(
            name="lion",
            learning_rate=cfg.learning_rate,
            b1=cfg.lion.b1,
            b2=cfg.lion.b2,
            weight_decay=cfg.lion.weight_decay,
            grad_clip=cfg.grad_clip,
        ),
    )
