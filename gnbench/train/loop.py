"""``train(config)``: one run from a config to ``summary.json``, resumable at any point.

Outputs in ``config.train.workdir``: ``identity.json`` (the run's config hash, see
:mod:`gnbench.train.identity`), ``config.json`` (the resolved config), ``metrics.jsonl`` (one
record per iteration and per evaluation, in every unit), ``summary.json`` (status and the target
crossing, written last and atomically), ``ckpt/`` (orbax) and, unless disabled, wandb files; and
``.lock`` while the run is going (:mod:`gnbench.train.workdir`). Rerunning the same command
resumes from the last checkpoint, or prints the summary when ``summary.json`` exists; the same
workdir with another config is an error naming the keys that differ.
"""

from __future__ import annotations

import dataclasses
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
from gnbench.optim.outside import OutsideMethodError
from gnbench.tracking import JsonlTracker, MultiTracker, WandbTracker
from gnbench.train.checkpoint import Checkpointer, checkpoint_problem, quiet_leftover_reads
from gnbench.train.identity import init_from_identity, make_identity, wandb_init_args
from gnbench.train.init_from import load_init_params
from gnbench.train.method_step import MethodStep
from gnbench.train.metrics import Progress, write_summary
from gnbench.train.state import TrainState
from gnbench.train.step import make_eval_step
from gnbench.train.validation import ConfigError, validate_config
from gnbench.train.workdir import (
    WorkdirLock,
    claim_workdir,
    has_checkpoint,
    inspect_workdir,
    summary_line,
)
from gnbench.train.workdir_path import check_writable


def _global_batch(local_KxBxT1: np.ndarray, sharding, global_b: int) -> jax.Array:
    k, _, t1 = local_KxBxT1.shape
    return jax.make_array_from_process_local_data(sharding, local_KxBxT1, (k, global_b, t1))


def _trackers(
    cfg: ml_collections.ConfigDict,
    workdir: Path,
    resume_step: int | None,
    identity: dict[str, Any],
):
    trackers = [JsonlTracker(workdir / "metrics.jsonl", truncate_after_step=resume_step or 0)]
    if cfg.wandb.mode != "disabled":
        trackers.append(
            WandbTracker(
                mode=cfg.wandb.mode,
                directory=workdir,
                **wandb_init_args(cfg, identity, workdir),
            )
        )
    return MultiTracker(*trackers)


def _known(units: dict[str, Any]) -> dict[str, Any]:
    """``units`` without the uncounted ones (``None``: FLOPs with ``train.count_flops=False``),
    so records lack them as the report and wandb expect of a unit a run does not measure."""
    return {name: value for name, value in units.items() if value is not None}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _evaluate_now(train_cfg: Any, step: int, last_val_loss: float | None) -> bool:
    """Every ``eval_every`` iterations and at the budget's end; every iteration once the last
    evaluation is within ``eval_dense_margin`` nats of the target (the crossing then falls
    between two consecutive iterations whatever ``eval_every`` is).

    Example:
      >>> import types
      >>> t = types.SimpleNamespace(eval_every=10, steps=100, target_loss=2.0,
      ...                           eval_dense_margin=0.1)
      >>> [_evaluate_now(t, 5, 2.5), _evaluate_now(t, 5, 2.05), _evaluate_now(t, 10, 3.0)]
      [False, True, True]
    """
    if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
        return True
    margin = train_cfg.eval_dense_margin
    return (
        bool(margin)
        and last_val_loss is not None
        and (last_val_loss <= train_cfg.target_loss + margin)
    )


def train(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """Runs (or resumes) the training run described by ``cfg``; returns its summary.

    A workdir holds one run: its identity (:mod:`gnbench.train.identity`, the hash of the
    resolved config) is in ``identity.json``. Starting finds the workdir empty (a new run), holding
    this run (resumed, or its summary printed and returned when finished) or another config's
    run (:class:`ConfigError` naming the differing keys, unless ``train.overwrite``). Every check
    of the config, the data and the init checkpoint runs before the workdir is created; the
    workdir's lock (:class:`gnbench.train.workdir.WorkdirLock`) is held while the run writes.

    Raises:
      ConfigError: a user mistake (config values, data, checkpoints, workdir), one line.

    Example:
      >>> from experiments import tiny                      # doctest: +SKIP
      >>> cfg = tiny.get_config(); cfg.train.steps = 5      # doctest: +SKIP
      >>> train(cfg)["status"]                              # doctest: +SKIP
      'finished'
    """
    validate_config(cfg)
    workdir = Path(cfg.train.workdir)
    main_process = jax.process_index() == 0
    init_from = cfg.train.init_from
    if init_from and not has_checkpoint(Path(init_from) / "ckpt"):
        raise ConfigError(
            f"train.init_from={init_from!r} has no checkpoint (looked in "
            f"{Path(init_from).absolute() / 'ckpt'}); train that run first or fix the path"
        )
    identity = make_identity(cfg, init_from_identity(init_from))
    overwrite = bool(cfg.train.get("overwrite", False))
    found = inspect_workdir(workdir, identity, overwrite)
    if found.kind == "finished":
        if main_process:
            print(summary_line(workdir, found.summary))
        return found.summary
    if main_process and workdir.is_dir():
        WorkdirLock.check(workdir)
    check_writable(workdir)
    resuming = found.kind == "resume" and has_checkpoint(workdir / "ckpt")
    if resuming:  # Checkpoints are read before anything is built or compiled.
        problem = checkpoint_problem(workdir / "ckpt")
        if problem:
            raise _unreadable_checkpoint(*problem)
    elif init_from:
        problem = checkpoint_problem(Path(init_from) / "ckpt")
        if problem:
            raise _unreadable_init_from(init_from, problem[1])

    devices = jax.devices()
    if cfg.mesh.num_devices != -1:
        if not 1 <= cfg.mesh.num_devices <= len(devices):
            raise ConfigError(
                f"mesh.num_devices={cfg.mesh.num_devices}; valid: -1 (all) or 1..{len(devices)}"
            )
        devices = devices[: cfg.mesh.num_devices]
    try:
        mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, devices)
    except ValueError as e:
        raise ConfigError(f"mesh: {_one_line(e)}; fix --config.mesh.data/fsdp") from None
    b, k, t = cfg.data.micro_batch, cfg.data.micro_batches, cfg.data.seq_len
    if b % mesh.size:
        raise ConfigError(
            f"data.micro_batch={b} is not divisible by the {mesh.size} devices of the mesh "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); "
            f"use a multiple of {mesh.size}"
        )
    try:
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
    except (ValueError, OSError, ImportError) as e:
        raise ConfigError(f"data.source={cfg.data.source!r}: {' '.join(str(e).split())}") from None
    bits_per_token = 1.0 / (math.log(2) * tokens.bytes_per_token)

    try:
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
    except OutsideMethodError as e:  # A builder outside gnbench that raised: one line.
        raise ConfigError(str(e)) from None

    def init_params():
        try:
            with quiet_leftover_reads():
                return load_init_params(init_from, method.abstract_state.params)
        except Exception as e:  # Orbax raises many kinds; every one means "unusable".
            raise _unreadable_init_from(init_from, _one_line(e)) from None

    if init_from and not resuming:  # Read before the workdir is touched.
        state = state._replace(params=init_params())
        init_from = ""

    lock, claimed = first_process_first(
        lambda: claim_workdir(workdir, identity, cfg.to_dict(), overwrite, main_process),
        "claim-workdir",
    )
    try:
        if claimed is not None and claimed.kind == "finished":  # Finished meanwhile.
            print(summary_line(workdir, claimed.summary))
            return claimed.summary
        setup = _Setup(
            mesh=mesh,
            source=tokens.source,
            method=method,
            opt=opt,
            state=state,
            data_iter=data_iter,
            val_NxBxT1=val_NxBxT1,
            bits_per_token=bits_per_token,
            init_params=init_params if init_from else None,
        )
        return _run(cfg, workdir, claimed.stored if claimed else identity, main_process, setup)
    finally:
        if lock is not None:
            lock.release()


@dataclasses.dataclass
class _Setup:
    """What :func:`train` built before claiming the workdir."""

    mesh: Any
    source: str
    method: MethodStep
    opt: Any
    state: TrainState
    data_iter: Any
    val_NxBxT1: np.ndarray
    bits_per_token: float
    init_params: Any  # Loads train.init_from's params when they are still needed, else None.


def _unreadable_checkpoint(step_dir: Path, why: str) -> ConfigError:
    """The error for a checkpoint of the run's own workdir that cannot be restored. (Its config
    is this run's, so train.overwrite would resume it: deleting the folder is the way.)"""
    step = int(step_dir.name)
    earlier = [int(p.name) for p in step_dir.parent.iterdir() if p.name.isdigit()]
    earlier = [s for s in earlier if s < step]
    then = f"iteration {max(earlier)}, the checkpoint before" if earlier else "iteration 0"
    return ConfigError(
        f"the checkpoint {step_dir} cannot be read ({why}); delete that folder to resume this "
        f"run from {then}, or give a new --config.train.workdir"
    )


def _unreadable_init_from(init_from: str, why: str) -> ConfigError:
    return ConfigError(
        f"train.init_from={init_from!r}: its checkpoint cannot be read ({why}); train that run "
        "again or fix the path"
    )


def _restore(ckpt: Checkpointer, abstract_state: Any, workdir: Path) -> tuple[Any, dict]:
    try:
        return ckpt.restore(abstract_state)
    except Exception as e:  # Orbax raises many kinds; every one means "unusable".
        step = ckpt.latest_step()
        ckpt.close()
        raise _unreadable_checkpoint(workdir / "ckpt" / str(step), _one_line(e)) from None


def _run(
    cfg: ml_collections.ConfigDict,
    workdir: Path,
    identity: dict[str, Any],
    main_process: bool,
    setup: _Setup,
) -> dict[str, Any]:
    """Trains from the claimed workdir's last checkpoint (or from the start) to the summary."""
    mesh, method, opt, state, data_iter = (
        setup.mesh,
        setup.method,
        setup.opt,
        setup.state,
        setup.data_iter,
    )
    b, k, t = cfg.data.micro_batch, cfg.data.micro_batches, cfg.data.seq_len
    summary_path = workdir / "summary.json"
    apply_fn, loss_fn, shardings = method.apply_fn, method.loss_fn, method.shardings
    bsharding = method.batch_sharding
    ckpt = Checkpointer(workdir / "ckpt")
    progress, resume_step = Progress(), ckpt.latest_step()
    if resume_step is not None:
        state, meta = _restore(ckpt, method.abstract_state, workdir)
        data_iter.set_state(meta["data"])
        progress = Progress(**meta["progress"])
    elif setup.init_params is not None:
        state = state._replace(params=setup.init_params())

    step_fn = method.lower(k, opt).compile()
    if resume_step is None and not cfg.train.count_flops:
        # Not counted: records and summary carry no FLOPs (null), for the whole run, even if
        # it is resumed with counting on (the FLOPs of its first iterations are unknown).
        progress.flops = progress.grad_equivalents = None
    if progress.cost is None and progress.flops is not None:
        # Measured once per run; a resumed run keeps its measurement.
        progress.cost = method.measure_cost(k, opt)
        progress.cost.update(  # What one iteration reads, by part.
            inner_tokens=k * b * t, line_search_tokens=opt.fresh_ls_micro_batches * b * t
        )
    cost = progress.cost  # None: FLOPs not counted (train.count_flops=False).
    eval_fn = make_eval_step(
        apply_fn, loss_fn, shardings.params, batch_sharding(mesh, batch_axis=1, ndim=3)
    )
    val = jax.device_put(setup.val_NxBxT1, batch_sharding(mesh, batch_axis=1, ndim=3))

    tracker = _trackers(cfg, workdir, resume_step, identity) if main_process else MultiTracker()
    if main_process:
        print(
            f"gnbench: {cfg.optimizer.name} on {cfg.model.name} ({setup.source}), "
            f"{mesh.size} device{'s' if mesh.size > 1 else ''}, outputs in {workdir}"
        )
        if opt.describe is not None:  # e.g. Muon's routing, K-FAC's blocks
            print(opt.describe(state.params))
        flops = (
            "FLOPs not counted (train.count_flops=false)"
            if cost is None
            else f"one iteration = {cost['step_flops']:.3g} FLOPs "
            f"({cost['step_flops'] / cost['fwd_bwd_flops']:.2f} forward+backward passes over a "
            f"micro-batch, {cost['source']})"
        )
        print(
            f"gnbench: {flops}; reads {k * b * t} tokens for the gradient/inner solve and "
            f"{opt.fresh_ls_micro_batches * b * t} for the line search"
            + (" (it re-evaluates the inner micro-batches)" if opt.ls_reuses_batch else "")
        )

    def evaluate(step: int) -> float:
        val_loss = float(eval_fn(state.params, val))
        progress.record_eval(step, val_loss, cfg.train.target_loss)
        tracker.log(
            {
                "kind": "eval",
                **_known(progress.units(step)),
                "val_loss": val_loss,
                "val_bpb": val_loss * setup.bits_per_token,
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
        if cost is not None:
            progress.flops += cost["step_flops"]
            progress.grad_equivalents += cost["step_flops"] / cost["fwd_bwd_flops"]
        step = i + 1
        tracker.log({"kind": "train", **_known(progress.units(step)), **metrics})
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tokens_per_step / seconds:.0f}")
        diverged = not math.isfinite(metrics["loss"])
        if not diverged and _evaluate_now(cfg.train, step, progress.last_val_loss):
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
    summary = dict(status=status, steps=step)
    if main_process:
        summary = write_summary(summary_path, status, step, cfg.train.target_loss, progress)
    tracker.close(summary)  # After summary.json: wandb's run summary gets the same fields.
    if main_process:
        print(
            f"gnbench: {status} after {step} iterations; best val loss "
            f"{progress.best_val_loss}; summary in {summary_path}"
        )
    return summary


__all__ = ["TrainState", "train"]
