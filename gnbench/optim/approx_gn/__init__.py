"""Structured approximations of the Gauss-Newton matrix G = Jᵀ H_z J: the ladder's middle rungs.

``diag_gn`` (its diagonal, sampled-label estimate; written here, no maintained JAX package has
it) and ``kfac`` (one Kronecker-factored block per layer, through kfac-jax; ``kfac_compat``
patches kfac-jax 0.0.8 for jax >= 0.9.2).
"""
