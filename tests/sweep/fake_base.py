"""A small experiment config for the fake trainer (the fields the sweep tests touch)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", learning_rate=0.1))
    c.data = ml_collections.ConfigDict(dict(micro_batch=4, seq_len=25, micro_batches=10))
    c.train = ml_collections.ConfigDict(
        dict(steps=10, eval_every=2, target_loss=2.5, workdir="runs/x", init_from="", progress=True)
    )
    c.wandb = ml_collections.ConfigDict(dict(group="", name="", grid_point=""))
    # Fake-only knobs: crash (exit 3), diverge at an iteration, sleep per iteration, and how the
    # learning rate scales with data.micro_batches (lr * (micro_batches / 10) ** batch_power).
    c.fake = ml_collections.ConfigDict(dict(crash=False, diverge_at=0, sleep=0.0, batch_power=0.0))
    return c
