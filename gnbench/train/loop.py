"""``train(config)``: one run from a config to ``summary.json``, resumable at any point.

Outputs in ``config.train.workdir``: ``config.json`` (the resolved config), ``metrics.jsonl``
(one record per iteration and per evaluation, in every unit), ``summary.json`` (status and the
target crossing, written last and atomically), ``ckpt/`` (orbax) and, unless disabled, wandb files.
Rerunning the same command resumes from the last checkpoint, or returns at once when
``summary.json`` exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from gnbench import data as gdata
from gnbench.distributed import first_process_first
from gnbench.model import get_model_config
from gnbench.model.sharding import batch_sharding, make_mesh
from gnbench.tracking import JsonlTracker, MultiTracker, WandbTracker
from gnbench.train.checkpoint import Checkpointer
from gnbench.train.init_from import load_init_params
from gnbench.train.method_step import MethodStep
from gnbench.train.metrics import Progress, write_json_atomic, write_summary
from gnbench.train.state import TrainState
from gnbench.train.step import make_eval_step


def _global_batch(local_KxBxT1: np.ndarray, sharding, global_b: int) -> jax.Array:
    k, _, t1 = local_KxBxT1.shape
    return jax.make_array_from_process_local_data(sharding, local_KxBxT1, (k, global_b, t1))


def _trackers(cfg: ml_collections.ConfigDict, workdir: Path, resume_step: int | None):
    trackers = [JsonlTracker(workdir / "metrics.jsonl", truncate_after_step=resume_step or 0)]
    if cfg.wandb.mode != "disabled":
        trackers.append(
            WandbTracker(
                mode=cfg.wandb.mode,
                project=cfg.wandb.project,
                group=cfg.wandb.group,
                name=cfg.wandb.name or workdir.name,
                config=cfg.to_dict(),
                directory=workdir,
            )
        )
    return MultiTracker(*trackers)


def train(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """Runs (or resumes) the training run described by ``cfg``; returns its summary.

    Example:
      >>> from experiments import tiny                      # doctest: +SKIP
      >>> cfg = tiny.get_config(); cfg.train.steps = 5      # doctest: +SKIP
      >>> train(cfg)["status"]                              # doctest: +SKIP
      'finished'
    """
    workdir = Path(cfg.train.workdir)
    summary_path = workdir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    main_process = jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    if main_process:
        write_json_atomic(workdir / "config.json", cfg.to_dict())

    devices = jax.devices()
    if cfg.mesh.num_devices != -1:
        if not 1 <= cfg.mesh.num_devices <= len(devices):
            raise ValueError(
                f"mesh.num_devices={cfg.mesh.num_devices}; valid: -1 (all) or 1..{len(devices)}"
            )
        devices = devices[: cfg.mesh.num_devices]
    mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, devices)
    b, k, t = cfg.data.micro_batch, cfg.data.micro_batches, cfg.data.seq_len
    if b % mesh.size:
        raise ValueError(
            f"data.micro_batch={b} is not divisible by the {mesh.size} devices of the mesh "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); "
            f"use a multiple of {mesh.size}"
        )
    tokens = gdata.TokenFile.open(
        first_process_first(  # Many processes: one tokenizes the corpus, the others reuse it.
            lambda: gdata.ensure_prepared(
                cfg.data.source,
                tokenizer=cfg.data.tokenizer,
                vocab_size=cfg.data.vocab_size,
                base=cfg.data.dir,
            ),
            "prepare-data",
        )
    )
    model_cfg = get_model_config(
        cfg.model.name, vocab_size=tokens.vocab_size, dtype=cfg.model.dtype
    )
    tokens.check_vocab(model_cfg.vocab_size)
    shard, shards = jax.process_index(), jax.process_count()
    data_iter = gdata.train_iterator(
        tokens,
        seq_len=t,
        micro_batch=b,
        micro_batches=k,
        seed=cfg.seed,
        shard_index=shard,
        shard_count=shards,
    )
    val_NxBxT1 = gdata.validation_batches(
        tokens, seq_len=t, n_sequences=cfg.data.val_sequences, batch=b
    )
    bits_per_token = 1.0 / (math.log(2) * tokens.bytes_per_token)

    method, opt, state = MethodStep.create(
        cfg.optimizer,
        model_cfg,
        mesh,
        micro_batch=b,
        seq_len=t,
        total_steps=cfg.train.steps,
        k=k,
        seed=cfg.seed,
    )
    apply_fn, loss_fn, shardings = method.apply_fn, method.loss_fn, method.shardings
    bsharding = method.batch_sharding
    ckpt = Checkpointer(workdir / "ckpt")
    progress, resume_step = Progress(), ckpt.latest_step()
    if resume_step is not None:
        state, meta = ckpt.restore(method.abstract_state)
        data_iter.set_state(meta["data"])
        progress = Progress(**meta["progress"])
    elif cfg.train.init_from:
        state = state._replace(
            params=load_init_params(cfg.train.init_from, method.abstract_state.params)
        )

    step_fn = method.lower(k, opt).compile()
    if progress.cost is None:  # Measured once per run; a resumed run keeps its measurement.
        progress.cost = method.measure_cost(k, opt)
        progress.cost.update(  # What one iteration reads, by part.
            inner_tokens=k * b * t, line_search_tokens=opt.fresh_ls_micro_batches * b * t
        )
    cost = progress.cost
    eval_fn = make_eval_step(
        apply_fn, loss_fn, shardings.params, batch_sharding(mesh, batch_axis=1, ndim=3)
    )
    val = jax.device_put(val_NxBxT1, batch_sharding(mesh, batch_axis=1, ndim=3))

    tracker = _trackers(cfg, workdir, resume_step) if main_process else MultiTracker()
    if main_process:
        print(
            f"gnbench: {cfg.optimizer.name} on {cfg.model.name} ({tokens.source}), "
            f"{mesh.size} device{'s' if mesh.size > 1 else ''}, outputs in {workdir}"
        )
        print(
            f"gnbench: one iteration = {cost['step_flops']:.3g} FLOPs "
            f"({cost['step_flops'] / cost['fwd_bwd_flops']:.2f} forward+backward passes over a "
            f"micro-batch, {cost['source']}); reads {cost['inner_tokens']} tokens for the "
            f"gradient/inner solve and {cost['line_search_tokens']} for the line search"
            + (" (it re-evaluates the inner micro-batches)" if opt.ls_reuses_batch else "")
        )

    def evaluate(step: int) -> float:
        val_loss = float(eval_fn(state.params, val))
        progress.record_eval(step, val_loss, cfg.train.target_loss)
        tracker.log(
            {
                "kind": "eval",
                **progress.units(step),
                "val_loss": val_loss,
                "val_bpb": val_loss * bits_per_token,
            }
        )
        return val_loss

    start = int(state.step)
    if start == 0:
        evaluate(0)
    tokens_per_step = (k + opt.fresh_ls_micro_batches) * b * t
    status = "finished"
    stop_now = cfg.train.stop_at_target and progress.reached is not None
    bar = tqdm(
        range(start, start if stop_now else cfg.train.steps),
        initial=start,
        total=cfg.train.steps,
        disable=not (cfg.train.progress and main_process),
        desc=cfg.optimizer.name,
    )
    for i in bar:
        batches = [next(data_iter) for _ in range(1 + (opt.fresh_ls_micro_batches > 0))]
        tic = time.perf_counter()
        state, metrics = step_fn(state, *[_global_batch(x, bsharding, b) for x in batches])
        metrics = {name: float(v) for name, v in jax.device_get(metrics).items()}
        seconds = time.perf_counter() - tic
        progress.wall_clock += seconds
        progress.tokens += tokens_per_step
        progress.flops += cost["step_flops"]
        progress.grad_equivalents += cost["step_flops"] / cost["fwd_bwd_flops"]
        step = i + 1
        tracker.log({"kind": "train", **progress.units(step), **metrics})
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tokens_per_step / seconds:.0f}")
        diverged = not math.isfinite(metrics["loss"])
        if not diverged and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
            diverged = not math.isfinite(evaluate(step))
        if diverged:
            status = "diverged"
            break
        if cfg.train.stop_at_target and progress.reached is not None:
            break
        if step % cfg.train.checkpoint_every == 0 and step < cfg.train.steps:
            ckpt.save(
                step,
                state,
                {"data": data_iter.get_state(), "progress": dataclasses.asdict(progress)},
            )
    bar.close()
    step = int(state.step)
    if status == "finished" and ckpt.latest_step() != step:
        ckpt.save(
            step, state, {"data": data_iter.get_state(), "progress": dataclasses.asdict(progress)}
        )
    ckpt.wait()
    ckpt.close()
    tracker.close()
    summary = dict(status=status, steps=step)
    if main_process:
        summary = write_summary(summary_path, status, step, cfg.train.target_loss, progress)
        print(
            f"gnbench: {status} after {step} iterations; best val loss "
            f"{progress.best_val_loss}; summary in {summary_path}"
        )
    return summary


__all__ = ["TrainState", "train"]
