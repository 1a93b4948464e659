"""Reads a wandb offline run file (``run-*.wandb``) back, for tests.

The file is a 7-byte header (``:W&B``, magic, version) then a LevelDB-style log: 32 KiB blocks
of records with a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle,
4 last) whose payloads are ``wandb_internal_pb2.Record`` protobufs.
"""

import dataclasses
import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024


def records(path: str | Path) -> list:
    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", "not a wandb run file"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(raw):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        payload = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):
            pending = payload
        else:
            pending += payload
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def history_and_config(path: str | Path) -> tuple[list[dict], dict, str]:
    """(history rows, config, group) of an offline run file."""
    rows, config, group = [], {}, ""
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in rec.history.item
                }
            )
        elif kind == "run":
            group = rec.run.run_group
            for item in rec.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                config[item.key] = json.loads(item.value_json)
    return rows, config, group


@dataclasses.dataclass
class OfflineRun:
    """What an offline run file holds, decoded."""

    rows: list[dict]  # History rows, ``_step`` included.
    config: dict
    group: str
    tags: list[str]
    summary: dict  # The last value written for each summary key.
    metrics: dict[str, dict]  # define_metric calls: name (or glob) -> step_metric, summary ops.


def read_run(path: str | Path) -> OfflineRun:
    """Everything :func:`history_and_config` reads, plus tags, summary and metric definitions."""
    rows, config, group = history_and_config(path)
    tags, summary, metrics = [], {}, {}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            tags = list(rec.run.tags)
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "metric":
            m = rec.metric
            ops = [f.name for f, on in m.summary.ListFields() if on is True]
            metrics[m.name or m.glob_name] = {"step_metric": m.step_metric, "summary": sorted(ops)}
    return OfflineRun(rows, config, group, tags, summary, metrics)
