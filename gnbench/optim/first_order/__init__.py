"""First-order baselines (gradient statistics, no curvature of the loss): the ladder's left end.

``soap`` (Kronecker-factored second moments of the gradient; written here, no maintained JAX
package has it), ``muon`` (KellerJordan's reference update) and ``muon_optax`` (optax's
``contrib.muon``, the variant the paper's code ran). AdamW is ``optax.adamw`` itself.
"""
