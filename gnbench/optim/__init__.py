"""Optax gradient transformations benchmarked by gnbench, and the registry that builds them."""

from gnbench.optim.registry import BuildContext, Optimizer, build, known_optimizers

__all__ = ["BuildContext", "Optimizer", "build", "known_optimizers"]
