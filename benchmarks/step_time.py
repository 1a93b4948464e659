"""Trainer throughput against a minimal hand-written jitted AdamW loop, in one run.

Both train the same model on the same number of tokens per step. The trainer's loop includes
what a real run pays for: the grain pipeline, the K-micro-batch scan, clipping, the injected
schedule, sharded placement of each batch and a host read of the metrics every step. The baseline
is a bare ``jax.jit`` AdamW step on one big batch already on the device. Reported as a ratio
(trainer / baseline tokens/s), since absolute numbers on shared machines are noisy.

    .venv/bin/python benchmarks/step_time.py --model tiny --steps 30
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import tiny
from gnbench import data as gdata
from gnbench.model import get_model_config
from gnbench.model.sharding import batch_sharding, make_mesh
from gnbench.optim import BuildContext, build
from gnbench.train.loop import _global_batch
from gnbench.train.state import create_state, lm_fns
from gnbench.train.step import make_train_step


def trainer_tokens_per_second(cfg, steps: int) -> float:
    b, k, t = cfg.data.micro_batch, cfg.data.micro_batches, cfg.data.seq_len
    tokens = gdata.TokenFile.open(
        gdata.ensure_prepared(
            cfg.data.source,
            tokenizer=cfg.data.tokenizer,
            vocab_size=cfg.data.vocab_size,
            base=cfg.data.dir,
        )
    )
    model_cfg = get_model_config(cfg.model.name, vocab_size=tokens.vocab_size)
    apply_fn, loss_fn = lm_fns(model_cfg)
    opt = build(cfg.optimizer, BuildContext(steps, k, apply_fn, loss_fn))
    mesh = make_mesh()
    state, shardings = create_state(model_cfg, opt.tx, mesh, 0)
    bs = batch_sharding(mesh, 1, 3)
    step = make_train_step(apply_fn, loss_fn, opt.tx, shardings, bs, False)
    it = gdata.train_iterator(tokens, seq_len=t, micro_batch=b, micro_batches=k, seed=0)
    state, m = step(state, _global_batch(next(it), bs, b))  # compile
    jax.block_until_ready(m)
    tic = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, _global_batch(next(it), bs, b))
        float(m["loss"])  # the trainer reads metrics every step
    return steps * k * b * t / (time.perf_counter() - tic)


def baseline_tokens_per_second(cfg, steps: int, vocab: int) -> float:
    b, k, t = cfg.data.micro_batch, cfg.data.micro_batches, cfg.data.seq_len
    model_cfg = get_model_config(cfg.model.name, vocab_size=vocab)
    apply_fn, loss_fn = lm_fns(model_cfg)
    from gnbench.model import init_params

    params = init_params(model_cfg, jax.random.key(0))
    tx = optax.adamw(cfg.optimizer.learning_rate, b1=0.9, b2=0.95, weight_decay=0.1)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, seqs):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(apply_fn(p, seqs), seqs))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    batches = [
        jnp.asarray(rng.integers(0, vocab, (k * b, t + 1), dtype=np.int32)) for _ in range(4)
    ]
    params, opt_state, loss = step(params, opt_state, batches[0])
    jax.block_until_ready(loss)
    tic = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, batches[i % 4])
    jax.block_until_ready(loss)
    return steps * k * b * t / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = tiny.get_config()
    cfg.model.name = args.model
    trainer, baseline = [], []
    for _ in range(args.repeats):  # interleaved so machine noise hits both alike
        baseline.append(baseline_tokens_per_second(cfg, args.steps, 256))
        trainer.append(trainer_tokens_per_second(cfg, args.steps))
    t, b = float(np.median(trainer)), float(np.median(baseline))
    print(
        f"| model | trainer tok/s | hand-written AdamW tok/s | ratio |\n|---|---|---|---|\n"
        f"| {args.model} | {t:.0f} | {b:.0f} | {t / b:.3f} |"
    )


if __name__ == "__main__":
    main()
