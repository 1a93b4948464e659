r"""``muon_optax``: ``optax.contrib.muon`` routed as the GN paper's code routes it.

The paper's code (Abreu et al. 2025, https://github.com/natalieabreu/full-gauss-newton) uses
``optax.contrib.muon`` both for its Muon baseline (``EasyLM/optimizers.py``,
``MuonOptimizerFactory``) and for GN's inner solver (``EasyLM/models/llama/llama_train_gn.py``,
``build_optimizer(..., optimizer_type='muon')``, run with ``--optimizer_type='muon'`` in
``templates/gn-template.sbatch``). Both build ``optax.multi_transform`` of two chains:

* ``'adamw'``: ``params.transformer.wte.embedding`` and ``params.lm_head.kernel`` (embedding and
  head) -> ``chain(clip_by_global_norm(c), adamw(lr, weight_decay=wd, b1, b2))``;
* ``'muon'``: every other leaf, *including* 1-D norm scales ->
  ``chain(clip_by_global_norm(c), optax.contrib.muon(learning_rate=lr, adam_weight_decay=wd,
  adam_b1=b1, adam_b2=b2[, beta=beta]))``; inside, ``optax.contrib.muon`` sends 2-D leaves to
  Muon and the rest to its own AdamW.

:func:`muon_optax` builds the same thing, routed by :mod:`gnbench.optim.routing`: leaves whose
role is embedding, positional table or output head go to the plain AdamW group (on the gnbench
transformer: ``embed`` and ``head``, the paper's selector, :func:`paper_labels`); every other leaf
goes to ``optax.contrib.muon``, with ``muon_weight_dimension_numbers`` from the same routing
(``MuonDimensionNumbers`` for hidden matrices and >2-D kernels, ``None`` for vectors, which
its own Adam takes, as the paper's 1-D leaves). ``labels=`` (``"muon"`` = orthogonalized) or
``weight_dimension_numbers=`` override the routing as in ``muon``; an ``"adam"`` leaf goes to
the AdamW group if its default role is one of those three, else to ``optax.contrib.muon``'s Adam.
It differs from the field's reference Muon (``muon``,
:mod:`gnbench.optim.first_order.muon`, https://github.com/KellerJordan/Muon) in:

1. Bias-corrected momentum (optax 0.2.8 ``scale_by_muon``): with Nesterov the orthogonalized
   matrix is ``beta*m/(1-beta^(t+1)) + (1-beta)*g/(1-beta^t)`` instead of ``beta*m + (1-beta)*g``
   (early steps weigh the fresh gradient differently; the two tend to each other as
   ``beta^t -> 0``). Without Nesterov it is ``m/(1-beta^t)``, a scalar that Newton-Schulz's
   normalization removes up to its epsilon (``eps/||m||`` against ``eps/||m/(1-beta^t)||``), so
   ``nesterov=False`` agrees with the reference to ~2e-6 relative (float64, 40 steps); with
   Nesterov they differ by ~1e-3 (tests/optim/test_muon.py measures both).
2. Newton-Schulz normalizes by ``||X||_F + eps`` with ``eps = 1e-8`` (the same ``eps`` as Adam's),
   the reference by ``+ 1e-7``.
3. 1-D leaves (norm scales, biases) go to ``optax.contrib.muon``'s Adam part, which is
   *NAdamW* in optax 0.2.8 (``adamw(..., nesterov=nesterov)``) with decay ``adam_weight_decay``;
   the reference sends them to plain AdamW. Embedding and head get plain AdamW in both.
4. Decay: the paper passes ``adam_weight_decay=wd`` and leaves ``weight_decay`` (Muon matrices)
   at its default 0, so hidden matrices are *not* decayed while embedding, head and 1-D leaves
   are. Here ``weight_decay`` is the Muon matrices' decay and ``adam_weight_decay`` the rest's,
   as for ``muon``: the paper's setting is ``weight_decay=0, adam_weight_decay=wd``.
5. Clipping: each of the two groups is clipped to global norm ``grad_clip`` by its own norm (the
   paper's two chains each start with ``clip_by_global_norm``); ``muon`` clips the whole
   gradient once. ``grad_clip`` ``None``/``0`` means off (the paper's code has no off switch).
6. Learning rates: the paper uses one schedule for all leaves; here Muon matrices use
   ``learning_rate`` and the two Adam parts ``adam_learning_rate`` (set them equal for the paper).
7. Momentum dtype: float32 (the paper's ``mu_dtype=jnp.float32``), in both Adam parts and Muon.

The paper's environment installs optax from git (unpinned, ``env.yml``); this module uses the
installed optax (0.2.8), whose ``optax.contrib.muon`` is documented above.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from gnbench.optim import pytrees, routing
from gnbench.optim.first_order.muon import ADAM_NAMES, NS_COEFFS
from gnbench.optim.registry import MUON_CHECKS, clip, muon_family_builder, register


def paper_labels(params: Any) -> Any:
    """``"adam"`` for every leaf under ``embed`` or ``head``; ``"muon"`` for all others.

    The paper's ``create_param_selector``: only the embedding and the LM head leave the
    ``optax.contrib.muon`` group, whatever their rank; 1-D leaves stay in it (and reach its Adam).

    Example:
      >>> paper_labels({"embed": {"embedding": jnp.zeros((4, 2))},
      ...               "norm": {"scale": jnp.zeros((2,))}})
      {'embed': {'embedding': 'adam'}, 'norm': {'scale': 'muon'}}
    """

    def label(path, x):
        del x
        names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
        return "adam" if names & set(ADAM_NAMES) else "muon"

    return jax.tree_util.tree_map_with_path(label, params)


def muon_optax(
    learning_rate: optax.ScalarOrSchedule,
    *,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: float = 0.0,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    grad_clip: float | None = None,
    mu_dtype: str | None = "float32",
    labels: Any = None,
    weight_dimension_numbers: Any = None,
) -> optax.GradientTransformation:
    """``optax.contrib.muon`` for the ``"muon"`` group, AdamW for ``"adam"``, clipped per group.

    Args:
      learning_rate: learning rate of the Muon matrices.
      adam_learning_rate: learning rate of the embed/head AdamW and of ``optax.contrib.muon``'s
        Adam part (non-2-D leaves); ``None`` means ``learning_rate`` (the paper).
      momentum: Muon momentum decay (``beta``).
      nesterov: passed to ``optax.contrib.muon`` (its Muon *and* its Adam part).
      ns_steps: Newton-Schulz iterations.
      weight_decay: decay of the Muon matrices (``optax.contrib.muon``'s ``weight_decay``; the
        paper leaves it at 0).
      adam_b1: first-moment decay of both Adam parts.
      adam_b2: second-moment decay of both Adam parts.
      eps: ``optax.contrib.muon``'s ``eps`` (Newton-Schulz and its Adam); the embed/head AdamW
        uses it too (the paper's is optax's default, the same 1e-8).
      adam_weight_decay: decay of both Adam parts (the paper's ``weight_decay``).
      grad_clip: global-norm clip applied to each group separately; ``None``/``0`` is off.
      mu_dtype: momentum dtype of all parts, by name (the paper: float32); ``None`` means the
        parameters' dtype. A name, not ``jnp.float32``: ``optax.inject_hyperparams`` would take
        a dtype (a callable) for a schedule.
      labels: ``"muon"``/``"adam"`` per leaf (a pytree or ``params -> pytree``; ``"muon"`` =
        orthogonalized); ``None`` means the default rule of :mod:`gnbench.optim.routing`.
      weight_dimension_numbers: instead of ``labels``, a pytree (or ``params -> pytree``) of
        ``MuonDimensionNumbers`` (muon) or ``None`` (adam), as ``optax.contrib.muon`` takes.
        Under ``optax.inject_hyperparams`` list both in ``static_args``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> params = {"embed": {"embedding": jnp.ones((8, 4))}, "w": jnp.ones((4, 4)),
      ...           "scale": jnp.ones((4,))}
      >>> tx = muon_optax(0.02)
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> updates["w"].shape
      (4, 4)
    """
    pytrees.require_numbers(
        "muon_optax",
        momentum=momentum,
        weight_decay=weight_decay,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_weight_decay=adam_weight_decay,
    )
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
    adam_group = optax.chain(
        clip(grad_clip),
        optax.adamw(
            adam_learning_rate,
            b1=adam_b1,
            b2=adam_b2,
            eps=eps,
            weight_decay=adam_weight_decay,
            mu_dtype=mu_dtype,
        ),
    )

    def outer_group(route: routing.Route) -> str:
        plain_adamw = route.group == "adam" and route.role in routing.OUTER_ADAM_ROLES
        return "adam" if plain_adamw else "muon"

    def build(tree):
        """The partition for this tree's routing (decided on the tree it is given)."""
        table = routing.routes(tree, labels, weight_dimension_numbers)
        muon_group = optax.chain(
            clip(grad_clip),
            optax.contrib.muon(
                learning_rate,
                ns_coeffs=NS_COEFFS,
                ns_steps=ns_steps,
                beta=momentum,
                eps=eps,
                weight_decay=weight_decay,
                mu_dtype=mu_dtype,
                nesterov=nesterov,
                adam_b1=adam_b1,
                adam_b2=adam_b2,
                adam_weight_decay=adam_weight_decay,
                adam_learning_rate=adam_learning_rate,
                muon_weight_dimension_numbers=routing.dims_lookup(table),
            ),
        )
        groups = routing.label_tree(tree, table, outer_group)
        routing.warn_if_no_muon(table, tree, "muon_optax")
        return optax.partition({"muon": muon_group, "adam": adam_group}, pytrees.constant(groups))

    return pytrees.built_per_tree(build, "muon_optax")


def _optax_muon(cfg, ctx, learning_rate, adam_learning_rate) -> optax.GradientTransformation:
    """``optax.contrib.muon`` routed as the GN paper's code (this module's :func:`muon_optax`).

    ``grad_clip`` clips each group (embed/head; the rest) by its own norm, as the paper's two
    chains do. The paper's setting: ``weight_decay=0`` (Muon matrices undecayed),
    ``muon.adam_weight_decay`` = its decay, ``muon.adam_learning_rate`` = ``learning_rate``.
    """
    m = cfg.muon
    return muon_optax(
        learning_rate,
        adam_learning_rate=adam_learning_rate,
        momentum=m.momentum,
        nesterov=m.nesterov,
        ns_steps=m.ns_steps,
        weight_decay=cfg.weight_decay,
        adam_b1=cfg.b1,
        adam_b2=cfg.b2,
        eps=cfg.eps,
        adam_weight_decay=m.adam_weight_decay,
        grad_clip=cfg.grad_clip,
        labels=ctx.param_labels,
    )


register("muon_optax", reads=("muon",), check=MUON_CHECKS)(
    muon_family_builder("muon_optax", _optax_muon)
)


__all__ = ["muon_optax", "paper_labels"]
