"""Checks of a run config that need no data, device or file: names and numbers.

:func:`validate_config` runs before the trainer creates anything, so a typo or an impossible
value fails in a second with one line (:class:`ConfigError`) naming the key, the value and what
to give instead. Keys a config lacks (a smaller experiment file) are not checked.

Example:
  >>> from experiments import tiny
  >>> cfg = tiny.get_config()
  >>> cfg.train.steps = 0
  >>> validate_config(cfg)
  Traceback (most recent call last):
  ...
  gnbench.train.validation.ConfigError: train.steps=0 must be an integer >= 1; give --config.train.steps=N with N >= 1
"""  # noqa: E501

from __future__ import annotations

import math
from typing import Any

# One lookup and one "did you mean" for every layer (re-exported: cli and sweeps use them).
from gnbench.optim.checks import MISSING as _MISSING
from gnbench.optim.checks import get, suggestion


class ConfigError(ValueError):
    """A user mistake in a run's config, data or workdir; the message is one line with the fix.

    ``gnbench train`` prints it as ``gnbench train: <message>`` and exits with code 2.
    """


# Names accepted by the trainer (the optimizer registry raises the same errors later; these
# fail before anything is built). Each method's own keys are checked by the check it registered
# (gnbench/optim/registry.py): train/ keeps no copy of a method's choices or ranges.
SCHEDULES = ("warmup_cosine", "warmup_constant", "constant")
DTYPES = ("float32", "bfloat16")


POSITIVE_INTS = (
    "data.seq_len",
    "data.micro_batch",
    "data.micro_batches",
    "data.val_sequences",
    "data.vocab_size",
    "train.steps",
    "train.eval_every",
    "train.checkpoint_every",
    "mesh.fsdp",
)
NONNEGATIVE_INTS = ("seed", "optimizer.warmup_steps")
ALL_OR_POSITIVE = ("mesh.data", "mesh.num_devices")  # -1 or >= 1.
POSITIVE_FLOATS = (
    "optimizer.learning_rate",
    "optimizer.eps",
)
NONNEGATIVE_FLOATS = (
    "train.eval_dense_margin",
    "optimizer.weight_decay",
    "optimizer.grad_clip",
    "optimizer.warmup_start",
    "optimizer.schedule_end",
)
DECAYS = (  # In [0, 1).
    "optimizer.b1",
    "optimizer.b2",
)


def _choice(cfg: Any, key: str, valid: list[str] | tuple[str, ...], what: str) -> None:
    value = get(cfg, key)
    if value is not _MISSING and value not in valid:
        raise ConfigError(
            f"unknown {what} {value!r}; known {what}s: {', '.join(valid)}"
            f"{suggestion(value, valid)}; set --config.{key}=NAME"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(cfg: Any) -> None:
    def fail(key: str, value: Any, need: str, example: str) -> None:
        raise ConfigError(f"{key}={value!r} must be {need}; give --config.{key}={example}")

    for key in POSITIVE_INTS:
        v = get(cfg, key)
        if v is not _MISSING and (not _is_number(v) or v != int(v) or v < 1):
            fail(key, v, "an integer >= 1", "N with N >= 1")
    for key in NONNEGATIVE_INTS:
        v = get(cfg, key)
        if v is not _MISSING and (not _is_number(v) or v != int(v) or v < 0):
            fail(key, v, "an integer >= 0", "N with N >= 0")
    for key in ALL_OR_POSITIVE:
        v = get(cfg, key)
        if v is not _MISSING and (not _is_number(v) or v != int(v) or not (v == -1 or v >= 1)):
            fail(key, v, "-1 (all) or an integer >= 1", "-1")
    for key in POSITIVE_FLOATS:
        v = get(cfg, key)
        if v is not _MISSING and (not _is_number(v) or not math.isfinite(v) or v <= 0):
            fail(key, v, "a finite number > 0", "3e-3")
    for key in NONNEGATIVE_FLOATS:
        v = get(cfg, key)
        if v is None and key == "optimizer.grad_clip":
            continue
        if v is not _MISSING and (not _is_number(v) or not math.isfinite(v) or v < 0):
            fail(key, v, "a finite number >= 0", "0.0")
    for key in DECAYS:
        v = get(cfg, key)
        if v is not _MISSING and (not _is_number(v) or not 0 <= v < 1):
            fail(key, v, "in [0, 1)", "0.9")
    target = get(cfg, "train.target_loss")
    if target is not _MISSING and (
        not _is_number(target) or not math.isfinite(target) or target <= 0
    ):
        need = "a finite number > 0 (a validation loss in nats/token)"
        fail("train.target_loss", target, need, "2.6")
    b, n = get(cfg, "data.micro_batch"), get(cfg, "data.val_sequences")
    if _is_number(b) and _is_number(n) and n < b:
        raise ConfigError(
            f"data.val_sequences={n} is fewer than data.micro_batch={b}: validation needs at "
            f"least one batch; give --config.data.val_sequences={b} or more"
        )


def _context(cfg: Any) -> None:
    """``data.seq_len`` fits the model's context (``max_len`` of ``model.name``)."""
    from gnbench.model.configs import CONFIGS

    name, seq_len = get(cfg, "model.name"), get(cfg, "data.seq_len")
    if name in CONFIGS and _is_number(seq_len) and seq_len > CONFIGS[name].max_len:
        limit = CONFIGS[name].max_len
        raise ConfigError(
            f"data.seq_len={seq_len} is longer than the context of model {name!r} "
            f"({limit} tokens); give --config.data.seq_len=N with N <= {limit}, or a larger "
            "--config.model.name"
        )


def validate_config(cfg: Any) -> None:
    """Checks the names and numbers of ``cfg`` (a run config, see ``experiments/base.py``).

    Raises:
      ConfigError: an unknown name (optimizer, model, schedule, tokenizer, ...), a value out of
        range (seed, steps, batch sizes, sequence length, learning rates, decays, target, ...) or
        one that contradicts another key (val_sequences < micro_batch, seq_len > the model's
        context).
    """
    from gnbench.data.tokenizers import TOKENIZERS
    from gnbench.model.configs import CONFIGS
    from gnbench.optim import known_optimizers
    from gnbench.optim.registry import check_optimizers, method
    from gnbench.tracking import WANDB_MODES

    name = get(cfg, "optimizer.name")
    if isinstance(name, str) and ":" in name:  # An outside method: resolve it now (one line).
        try:
            method(name)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        _choice(cfg, "optimizer.name", known_optimizers(), "optimizer")
    _choice(cfg, "model.name", list(CONFIGS), "model")
    _choice(cfg, "model.dtype", DTYPES, "dtype")
    _choice(cfg, "data.tokenizer", TOKENIZERS, "tokenizer")
    _choice(cfg, "optimizer.schedule", SCHEDULES, "schedule")
    _choice(cfg, "wandb.mode", WANDB_MODES, "wandb mode")
    optimizer = get(cfg, "optimizer")
    if optimizer is not _MISSING:
        try:  # Every registered method's own keys, the run's method first.
            check_optimizers(optimizer)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    for key, example in (("data.source", "shakespeare"), ("train.workdir", "runs/my_run")):
        v = get(cfg, key)
        if v is not _MISSING and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(f"{key}={v!r} is empty; give --config.{key}={example}")
    _numbers(cfg)
    _context(cfg)
