"""The CPU default: the tiny model (~0.85M parameters) with AdamW on byte-level Shakespeare.

gnbench train --config experiments/tiny.py
"""

from experiments import base


def get_config():
    c = base.get_config()
    c.model.name = "tiny"
    c.data.source = "shakespeare"
    c.data.tokenizer = "byte"
    c.data.seq_len = 64
    c.data.micro_batch = 16
    c.data.micro_batches = 8
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.train.steps = 40
    c.train.eval_every = 2
    c.train.workdir = "runs/tiny"
    return c
