"""Gauss-Newton with an inner solver (docs/METHOD.md): the ladder's right end, written here.

``gauss_newton`` (full GN: the inner optimizer minimizes the GN model of the loss around θ_t),
``layerwise`` (the same per block, exact block-diagonal G), ``prox_linear`` (the exact loss of
the linearized model), over ``curvature`` (GN-vector products) and ``gnbench.optim.loops``
(the inner loop's scan); ``builders registers the four GN methods, ``wrappers`` adapts them to optax
wrappers and ``inject_hyperparams``.
"""
