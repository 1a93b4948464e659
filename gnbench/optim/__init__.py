"""Optax gradient transformations benchmarked by gnbench, and the registry that builds them.

The methods, each with its registry builder beside it: ``soap``, ``muon``, ``muon_optax`` (first
order); ``gauss_newton``, ``prox_linear``, ``layerwise`` (the GN family, built by
``gn_builders``); ``diag_gn``, ``kfac`` (the approximation ladder's rungs between AdamW and
layerwise GN). Shared parts: ``curvature`` (GN products), ``precision``, ``routing``, ``loops``.

Example:
  >>> import optax
  >>> from gnbench import optim
  >>> tx = optim.gauss_newton(lambda p, x: x @ p, lambda y, x: (y ** 2).mean(),   # doctest: +SKIP
  ...                         inner=optax.adam(1e-3), inner_steps=4)
"""

# Importing a method's module registers its builder (gnbench/optim/registry.py).
from gnbench.optim import diag_gn, gn_builders, kfac  # noqa: F401
from gnbench.optim.curvature import gn_vector_product
from gnbench.optim.gauss_newton import GaussNewtonState, gauss_newton, line_search_alphas
from gnbench.optim.gn_wrappers import inject_gn_hyperparams, none_grads_as_zeros
from gnbench.optim.layerwise import format_blocks, layerwise_gauss_newton, transformer_blocks
from gnbench.optim.muon import muon, orthogonalize, scale_by_muon_reference
from gnbench.optim.muon_optax import muon_optax
from gnbench.optim.prox_linear import gn_prox_linear
from gnbench.optim.registry import BuildContext, Optimizer, build, known_optimizers
from gnbench.optim.routing import format_routing, routing_summary, routing_table
from gnbench.optim.soap import SoapState, scale_by_soap, soap

__all__ = [
    "BuildContext",
    "GaussNewtonState",
    "Optimizer",
    "SoapState",
    "build",
    "format_blocks",
    "format_routing",
    "gauss_newton",
    "gn_prox_linear",
    "gn_vector_product",
    "inject_gn_hyperparams",
    "known_optimizers",
    "layerwise_gauss_newton",
    "line_search_alphas",
    "muon",
    "muon_optax",
    "none_grads_as_zeros",
    "orthogonalize",
    "routing_summary",
    "routing_table",
    "scale_by_muon_reference",
    "scale_by_soap",
    "soap",
    "transformer_blocks",
]
