"""Optax gradient transformations benchmarked by gnbench, and the registry that builds them.

The folders follow the approximation ladder, from no curvature to all of G = Jᵀ H_z J, each
method's registry builder beside its transform:

    first_order/   soap, muon, muon_optax            (AdamW is optax.adamw)
    approx_gn/     diag_gn, kfac, kfac_adaptive      structured approximations of G (+ kfac_compat)
    gn/            gauss_newton, layerwise, prox_linear (+ curvature, builders, wrappers)

Shared by all: ``registry`` (the table the builders register in, with what each method reads
and a check of its own keys, ``checks``), ``outside`` (methods named by where they live,
``pkg.module:attr`` or ``path/to/file.py:attr``, declared with ``outside_method``), ``loops``
(scans the trainer's FLOP count unrolls), ``routing`` (which leaves Muon orthogonalizes,
layerwise GN's blocks), ``precision`` (matmul precision pins),
``flax_train_state`` (``apply_gradients`` with ``batch=``; needs flax).

Example:
  >>> import optax
  >>> from gnbench import optim
  >>> tx = optim.gauss_newton(lambda p, x: x @ p, lambda y, x: (y ** 2).mean(),   # doctest: +SKIP
  ...                         inner=optax.adam(1e-3), inner_steps=4)
"""

# Importing a method's module registers its builder (gnbench/optim/registry.py). The names are
# the factories; the modules stay reachable as gnbench.optim.approx_gn.diag_gn / .kfac.
from gnbench.optim.approx_gn.diag_gn import diag_gn
from gnbench.optim.approx_gn.kfac import kfac
from gnbench.optim.approx_gn.kfac_adaptive import kfac_adaptive
from gnbench.optim.first_order.muon import muon, orthogonalize, scale_by_muon_reference
from gnbench.optim.first_order.muon_optax import muon_optax
from gnbench.optim.first_order.soap import SoapState, scale_by_soap, soap
from gnbench.optim.gn import builders  # noqa: F401
from gnbench.optim.gn.curvature import gn_vector_product
from gnbench.optim.gn.gauss_newton import GaussNewtonState, gauss_newton, line_search_alphas
from gnbench.optim.gn.layerwise import format_blocks, layerwise_gauss_newton, transformer_blocks
from gnbench.optim.gn.prox_linear import gn_prox_linear
from gnbench.optim.gn.staged import StagedModel
from gnbench.optim.gn.wrappers import inject_gn_hyperparams, none_grads_as_zeros
from gnbench.optim.outside import OutsideMethodError, outside_method
from gnbench.optim.registry import BuildContext, Optimizer, build, known_optimizers
from gnbench.optim.routing import format_routing, routing_summary, routing_table

__all__ = [
    "BuildContext",
    "GaussNewtonState",
    "Optimizer",
    "OutsideMethodError",
    "SoapState",
    "StagedModel",
    "build",
    "diag_gn",
    "format_blocks",
    "format_routing",
    "gauss_newton",
    "gn_prox_linear",
    "gn_vector_product",
    "inject_gn_hyperparams",
    "kfac",
    "kfac_adaptive",
    "known_optimizers",
    "layerwise_gauss_newton",
    "line_search_alphas",
    "muon",
    "muon_optax",
    "none_grads_as_zeros",
    "orthogonalize",
    "outside_method",
    "routing_summary",
    "routing_table",
    "scale_by_muon_reference",
    "scale_by_soap",
    "soap",
    "transformer_blocks",
]
