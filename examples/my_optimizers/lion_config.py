"""The tiny CPU run (experiments/tiny.py) with Lion from examples/my_optimizers/lion.py.

    gnbench train --config examples/my_optimizers/lion_config.py      # from the repository root

The config adds Lion's own section, ``optimizer.lion``, with a comment on every key, as
experiments/base.py does for the built-in methods. Lion's learning rate is typically 3-10x
smaller than AdamW's (its update has unit size per coordinate).
"""

import ml_collections

from experiments import tiny

# The entry is a path relative to the folder gnbench runs in (the repository root).
ENTRY = "examples/my_optimizers/lion.py:lion"


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.optimizer.name = ENTRY
    c.optimizer.learning_rate = 1e-3
    c.optimizer.lion = ml_collections.ConfigDict()
    c.optimizer.lion.b1 = 0.9  # Interpolation of momentum and gradient in the sign, in [0, 1).
    c.optimizer.lion.b2 = 0.99  # Momentum decay, in [0, 1).
    c.optimizer.lion.weight_decay = 0.0  # Decoupled weight decay λ (times the learning rate).
    c.train.workdir = "runs/lion"
    return c
