"""The tiny CPU run (experiments/tiny.py) with the data-reading example
examples/my_optimizers/line_search_sgd.py.

    gnbench train --config examples/my_optimizers/line_search_config.py   # from the repo root
"""

import ml_collections

from experiments import tiny

ENTRY = "examples/my_optimizers/line_search_sgd.py:build"


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.optimizer.name = ENTRY
    c.optimizer.learning_rate = 0.3  # The largest step tried (at 1.0 the val loss rose).
    c.optimizer.schedule = "constant"
    c.optimizer.line_search = ml_collections.ConfigDict()
    c.optimizer.line_search.shrink = 0.5  # Each trial step is this times the one before, (0, 1].
    c.optimizer.line_search.tries = 4  # Steps tried per iteration (one forward pass each).
    c.optimizer.line_search.armijo = 0.1  # c of L(θ − αg) ≤ L(θ) − c α ‖g‖², >= 0.
    c.train.workdir = "runs/line_search_sgd"
    return c
