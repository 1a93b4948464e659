"""A run's identity: the hash of its fully resolved config, minus the keys that cannot change its
results, plus the gnbench version.

The trainer stores the identity in ``<workdir>/identity.json`` and compares it on every start (a
workdir holds one run); a sweep names each run ``<method>-<identity[:10]>``; wandb run ids derive
from it. Both compute it with :func:`config_hash`, so a sweep's run id is the start of the hash
its trainer writes.

What is left out (:data:`NON_RESULT_KEYS`) is where files go and how a run is watched: none of it
changes a number the run records. The ``optimizer`` sub-sections a method does not read (what
it registered, :func:`sections_read`: AdamW reads none, SOAP its own, ...) are left out too, so
adding a setting to one method keeps every other method's runs (their builders build and step
the same with those sections deleted: tests/optim/test_registry_contract.py).

``train.init_from`` changes results, but through the run it names, not its path: the hash holds
that run's identity (its ``identity.json``) instead, so a sweep folder can move and a warm-up
keeps its dependants' ids. ``mesh.*`` stays in: the device layout changes the measured FLOPs
(XLA counts every device's program), the wall-clock and the order of floating-point sums.

Example:
  >>> a = {"seed": 0, "train": {"steps": 10, "workdir": "runs/a", "progress": True}}
  >>> b = {"seed": 0, "train": {"steps": 10, "workdir": "runs/b", "progress": False}}
  >>> config_hash(a) == config_hash(b)
  True
  >>> differing_keys(result_config(a), result_config({**a, "seed": 1}))
  ['seed: 0 → 1']
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

import gnbench

# Keys that cannot change a run's results (why, for each): left out of its identity.
NON_RESULT_KEYS = (
    "train.workdir",  # Where the files go.
    "train.progress",  # The progress bar.
    "train.overwrite",  # What to do with another run's files in the workdir.
    "train.count_flops",  # Whether FLOPs are measured: the step, data and losses are the same.
    "train.checkpoint_every",  # Resumed runs reproduce the uninterrupted ones (test_resume.py).
    "data.dir",  # Where prepared token files are cached; source/tokenizer/vocab fix the tokens.
    "wandb.mode",  # Where metrics are mirrored; metrics.jsonl is the record.
    "wandb.project",
    "wandb.group",
    "wandb.name",
    "wandb.grid_point",  # The swept values, already in the config as the keys they set.
)
INIT_FROM = "train.init_from"  # Hashed as the identity of the run it names (see module doc).
VERSION_KEY = "gnbench version"  # How a version change is named among the differing keys.
IDENTITY_FILE = "identity.json"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict or ConfigDict -> ``{"a.b": leaf}``.

    Example:
      >>> flatten({"train": {"steps": 3}, "seed": 0})
      {'train.steps': 3, 'seed': 0}
    """
    if hasattr(tree, "to_dict"):
        tree = tree.to_dict()
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        if hasattr(value, "items"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _canonical(value: Any) -> Any:
    """The hashed form of a value: numbers as floats (``1`` and ``1.0`` are one learning rate),
    tuples as lists, non-finite floats as strings (JSON has none)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return repr(value)


def _optimizer_section(key: str) -> str | None:
    """``"optimizer.soap.b1"`` -> ``"soap"``; a key outside an optimizer sub-section -> None."""
    parts = key.split(".")
    return parts[1] if parts[0] == "optimizer" and len(parts) > 2 else None


def result_config(cfg: Any, init_from_id: str | None = None) -> dict[str, Any]:
    """The flat config that identifies a run: ``cfg`` minus :data:`NON_RESULT_KEYS` and minus the
    ``optimizer`` sub-sections its method does not read (:func:`sections_read`; so a new K-FAC
    setting does not rename every AdamW run), with ``train.init_from`` (when set) replaced by
    ``init_from_id`` (the identity of the run it names; default: the path itself)."""
    flat = {k: v for k, v in flatten(cfg).items() if k not in NON_RESULT_KEYS}
    optimizer: dict[str, Any] = {}  # The optimizer section, nested again (``cfg`` may be flat).
    for key, value in flat.items():
        parts = key.split(".")
        if parts[0] == "optimizer" and len(parts) in (2, 3):
            if len(parts) == 2:
                optimizer[parts[1]] = value
            else:
                optimizer.setdefault(parts[1], {})[parts[2]] = value
    unread = {k for k, v in optimizer.items() if isinstance(v, dict)} - sections_read(optimizer)
    flat = {k: v for k, v in flat.items() if _optimizer_section(k) not in unread}
    if flat.get(INIT_FROM) and init_from_id:
        flat[INIT_FROM] = init_from_id
    return flat


def config_hash(cfg: Any, init_from_id: str | None = None) -> str:
    """sha256 (hex) of the sorted JSON of :func:`result_config` and the gnbench version."""
    flat = {k: _canonical(v) for k, v in result_config(cfg, init_from_id).items()}
    payload = json.dumps(
        {"config": flat, "version": gnbench.__version__}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def make_identity(cfg: Any, init_from_id: str | None = None) -> dict[str, Any]:
    """What ``identity.json`` holds: the hash, the version and the flat result config."""
    return {
        "hash": config_hash(cfg, init_from_id),
        "version": gnbench.__version__,
        "config": result_config(cfg, init_from_id),
    }


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def differing_keys(
    old: dict[str, Any], new: dict[str, Any], old_version: str | None = None
) -> list[str]:
    """``["key: old → new", ...]`` for the keys whose values differ (``1`` equals ``1.0``).

    ``old_version`` (the version that wrote ``old``) is compared with this gnbench's.
    """
    out = []
    if old_version is not None and old_version != gnbench.__version__:
        out.append(f"{VERSION_KEY}: {old_version} → {gnbench.__version__}")
    missing = object()
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing or b is missing or _canonical(a) != _canonical(b):
            show = [("(absent)" if v is missing else _short(v)) for v in (a, b)]
            out.append(f"{key}: {show[0]} → {show[1]}")
    return out


def describe_differences(diffs: list[str], limit: int = 5) -> str:
    """The first ``limit`` differences joined, then ``and N more``.

    Example:
      >>> describe_differences([f"k{i}: 0 → 1" for i in range(7)], limit=2)
      'k0: 0 → 1, k1: 0 → 1 and 5 more'
    """
    text = ", ".join(diffs[:limit])
    return text + (f" and {len(diffs) - limit} more" if len(diffs) > limit else "")


def read_identity(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``<run_dir>/identity.json``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "hash" in data else None


def init_from_identity(init_from: str) -> str | None:
    """The identity hash of the run ``init_from`` names (``None`` when unset); a folder without
    ``identity.json`` (not written by this gnbench) is identified by its absolute path."""
    if not init_from:
        return None
    ident = read_identity(init_from)
    return str(ident["hash"]) if ident else str(Path(init_from).absolute())


def wandb_run_id(config_hash_: str, project: str, group: str, name: str, created: str) -> str:
    """The wandb run id of a run: unique per resolved config, project, group (sweep), display name
    and workdir instance (``created``: when its workdir was claimed, kept in ``identity.json``).

    A deleted-and-rerun workdir or the same config in two sweeps gets a new wandb run; a resumed
    run keeps its own.

    Example:
      >>> a = wandb_run_id("ab" * 32, "gnbench", "sweep1", "sweep1/adamw-abab", "t0")
      >>> b = wandb_run_id("ab" * 32, "gnbench", "sweep2", "sweep2/adamw-abab", "t0")
      >>> a != b and len(a) == 24
      True
    """
    payload = json.dumps([config_hash_, project, group, name, created])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def wandb_display_name(group: str, name: str, workdir: str | os.PathLike) -> str:
    """``<group>/<name>`` in a sweep (the sweep sets ``name`` to the run id), else ``name`` or the
    workdir's folder name.

    Example:
      >>> wandb_display_name("compare_tiny", "adamw-0123456789", "runs/x")
      'compare_tiny/adamw-0123456789'
      >>> wandb_display_name("", "", "runs/lr1e-2")
      'lr1e-2'
    """
    name = name or Path(workdir).absolute().name
    return f"{group}/{name}" if group else name


def sections_read(optimizer: Mapping[str, Any]) -> set[str]:
    """The sub-sections of the ``optimizer`` config that its method reads: what the method
    registered (:func:`gnbench.optim.registry.sections_read`); every section for a name the
    registry does not know.

    Example:
      >>> opt = {"name": "gauss_newton", "gn": {"inner": "muon"}, "muon": {}, "soap": {}}
      >>> sorted(sections_read(opt)), sorted(sections_read({**opt, "name": "adamw"}))
      (['gn', 'muon'], [])
    """
    import gnbench.optim  # noqa: F401  (importing it registers every built-in method)
    from gnbench.optim.registry import sections_read as registered

    sections = {k for k, v in optimizer.items() if isinstance(v, Mapping)}
    read = registered(optimizer)
    return sections if read is None else read & sections


def parse_grid_point(text: str) -> dict[str, Any]:
    """``wandb.grid_point`` (JSON of ``{key: value}``, "" outside a sweep) -> the dict.

    Example:
      >>> parse_grid_point('{"optimizer.learning_rate": 0.003}')
      {'optimizer.learning_rate': 0.003}
    """
    if not text:
        return {}
    try:
        point = json.loads(text)
    except ValueError:
        point = None
    if not isinstance(point, dict):
        raise ValueError(
            f"wandb.grid_point={text!r} is not a JSON object; give "
            '\'{"optimizer.learning_rate": 0.003}\' or "" (gnbench sweep sets it)'
        )
    return point


def wandb_config(cfg: Any) -> dict[str, Any]:
    """The config a run logs to wandb: the resolved config with ``method`` (the optimizer's name)
    and ``grid_point`` (the sweep's swept values for this run: ``{key: value}``, ``{}`` outside a
    sweep) on top, and only the optimizer sections its method reads (:func:`sections_read`).

    Example:
      >>> from experiments.base import get_config
      >>> c = wandb_config(get_config())
      >>> c["method"], sorted(k for k, v in c["optimizer"].items() if isinstance(v, dict))
      ('adamw', [])
    """
    config = cfg.to_dict() if hasattr(cfg, "to_dict") else json.loads(json.dumps(cfg))
    optimizer = config["optimizer"]
    read = sections_read(optimizer)
    for key in [k for k, v in optimizer.items() if isinstance(v, Mapping) and k not in read]:
        del optimizer[key]
    grid_point = parse_grid_point(config.get("wandb", {}).pop("grid_point", ""))
    return {"method": optimizer["name"], "grid_point": grid_point, **config}


def wandb_tags(cfg: Any) -> list[str]:
    """The run's wandb tags: its method, its sweep (the wandb group, when set) and its model; each
    cut to wandb's 64 characters.

    Example:
      >>> from experiments.base import get_config
      >>> wandb_tags(get_config())
      ['adamw', 'tiny']
    """
    tags = [cfg.optimizer.name, cfg.wandb.group, cfg.model.name]
    return [str(t)[:64] for t in dict.fromkeys(tags) if t]


def wandb_init_args(
    cfg: ml_collections.ConfigDict, identity: dict[str, Any], workdir: str | os.PathLike
) -> dict[str, Any]:
    """The wandb run's project, group, display name, id, tags and config (no wandb call).

    The id is unique per resolved config, project, sweep (group), display name and workdir
    instance (:func:`gnbench.train.identity.wandb_run_id`); the name is readable:
    ``<sweep>/<method>-<hash>`` in a sweep, else ``wandb.name`` or the workdir's folder name.
    Tags: :func:`wandb_tags`; config: :func:`wandb_config`.
    """
    name = wandb_display_name(cfg.wandb.group, cfg.wandb.name, workdir)
    return dict(
        project=cfg.wandb.project,
        group=cfg.wandb.group,
        name=name,
        run_id=wandb_run_id(
            identity["hash"],
            cfg.wandb.project,
            cfg.wandb.group,
            name,
            str(identity.get("created", "")),
        ),
        tags=wandb_tags(cfg),
        config=wandb_config(cfg),
    )
