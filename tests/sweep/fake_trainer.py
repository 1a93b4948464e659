"""A stand-in for ``gnbench train`` that honours the run contract, fast and deterministic.

``python fake_trainer.py --config BASE.py --config.key=value ...`` writes ``config.json``,
``metrics.jsonl`` (train and eval records, an eval at step 0) and ``summary.json`` into
``train.workdir``; it "checkpoints" its step in ``progress.txt`` after every iteration and resumes
from it; it exits at once if ``summary.json`` exists. Every invocation appends ``start`` (and
``finish`` when it completes) to ``invocations.txt`` so tests can count launches. Loss:
``2 + 3 exp(-lr * step) + 0.01 * seed`` with ``lr = learning_rate * (micro_batches / 10) **
fake.batch_power`` (tokens 1000 per step, compute 8, wall-clock 0.5 s; no ``flops`` field, like
an older trainer). A base config without the ``fake`` section (a real experiment file) runs with
none of its knobs.
"""

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import ml_collections


def _load(path):
    spec = importlib.util.spec_from_file_location("fake_base_cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _parse(config, key, text):
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    old = node[leaf]  # KeyError on unknown keys, like ml_collections.
    if isinstance(old, bool):
        value = text.lower() == "true"
    elif isinstance(old, (int, float)):
        value = type(old)(text)
    else:
        value = text
    node[leaf] = value


def _atomic(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv):
    config = _load(argv[argv.index("--config") + 1])
    for arg in argv:
        if arg.startswith("--config."):
            key, _, text = arg[len("--config.") :].partition("=")
            _parse(config, key, text)
    if "fake" not in config:  # A real experiment config (gnbench ladder's tests): no knobs.
        knobs = dict(crash=False, diverge_at=0, sleep=0.0, batch_power=0.0)
        with config.unlocked():
            config.fake = ml_collections.ConfigDict(knobs)
    work = Path(config.train.workdir)
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "invocations.txt", "a") as f:
        f.write("start\n")
    if (work / "summary.json").exists():
        return 0
    if config.fake.crash:
        print("fake trainer: crashing as asked", file=sys.stderr)
        return 3
    _atomic(work / "config.json", json.dumps(config.to_dict()))
    progress = work / "progress.txt"
    start = int(progress.read_text()) if progress.exists() else 0
    lr, seed, steps = config.optimizer.learning_rate, config.seed, config.train.steps
    lr *= (config.data.micro_batches / 10) ** config.fake.batch_power

    d = config.data
    tokens_per_step = d.micro_batch * d.seq_len * d.micro_batches  # 1000 at the base's K = 10.

    def units(step):
        return dict(
            step=step,
            tokens=tokens_per_step * step,
            grad_equivalents=8.0 * step,
            wall_clock=0.5 * step,
        )

    def loss(step):
        return 2.0 + 3.0 * math.exp(-lr * step) + 0.01 * seed

    def log(record):
        with open(work / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    summary = dict(
        status="finished",
        steps=steps,
        target_loss=config.train.target_loss,
        reached=None,
        final_val_loss=None,
        best_val_loss=None,
    )
    if start == 0:
        log(dict(kind="eval", val_loss=loss(0), val_bpb=loss(0) / math.log(2), **units(0)))
    for step in range(start + 1, steps + 1):
        time.sleep(config.fake.sleep)
        if config.fake.diverge_at and step >= config.fake.diverge_at:
            log(dict(kind="train", loss=float("nan"), lr=lr, **units(step)))
            summary.update(status="diverged", steps=step)
            break
        log(dict(kind="train", loss=loss(step), lr=lr, **units(step)))
        if step % config.train.eval_every == 0 or step == steps:
            log(
                dict(
                    kind="eval",
                    val_loss=loss(step),
                    val_bpb=loss(step) / math.log(2),
                    **units(step),
                )
            )
        _atomic(progress, str(step))
    _atomic(work / "summary.json", json.dumps(summary))
    with open(work / "invocations.txt", "a") as f:
        f.write("finish\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
