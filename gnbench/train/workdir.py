"""A workdir holds one run, written by one process at a time.

- :func:`inspect_workdir` (read-only) says what a start finds: nothing of a run (``fresh``), this
  run unfinished (``resume``) or finished (``finished``), or another config's run (an error naming
  the keys that differ, unless ``train.overwrite`` asks to ``replace`` it).
- :class:`WorkdirLock`: ``<workdir>/.lock`` (host, pid, start time), created with
  ``O_CREAT | O_EXCL`` before the run writes anything and removed when it ends (also on SIGTERM,
  see :func:`release_held_locks`). A second run on the workdir fails at once naming the holder. A
  lock is stale, and taken over with a note on stderr, when its process is gone: the pid is dead
  on this host, or (another host) the holder stopped refreshing the file's mtime (every
  :data:`HEARTBEAT_S` seconds) :data:`STALE_AFTER_S` seconds ago.
- :func:`remove_run_files` deletes only the files a run writes (:data:`RUN_FILES`), never
  anything else in the folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gnbench.files import atomic_write_json
from gnbench.train.identity import (
    IDENTITY_FILE,
    describe_differences,
    differing_keys,
    read_identity,
    result_config,
)
from gnbench.train.validation import ConfigError
from gnbench.train.workdir_path import check_path, unwritable

LOCK_FILE = ".lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
# Everything a run writes in its workdir (the sweep's log.txt is the sweep's, not the run's).
RUN_FILES = (
    "ckpt",
    "metrics.jsonl",
    "metrics.tmp",
    "summary.json",
    "summary.json.tmp",
    "config.json",
    "config.json.tmp",
    IDENTITY_FILE,
    IDENTITY_FILE + ".tmp",
    "wandb",
)
_HELD: set[WorkdirLock] = set()


@dataclasses.dataclass
class WorkdirState:
    """What :func:`inspect_workdir` found: ``kind`` is fresh, resume, finished or replace."""

    kind: str
    summary: dict[str, Any] | None = None
    stored: dict[str, Any] | None = None  # The identity on disk (None: fresh or legacy).


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{path} is unreadable or corrupt ({type(e).__name__}); delete it, or use a new "
            "--config.train.workdir"
        ) from None


def _holds_run_files(workdir: Path) -> bool:
    return any((workdir / name).exists() for name in RUN_FILES)


def inspect_workdir(
    workdir: str | os.PathLike, identity: dict[str, Any], overwrite: bool = False
) -> WorkdirState:
    """What starting the run ``identity`` in ``workdir`` finds (reads only).

    Raises:
      ConfigError: the workdir holds another config's run (and ``overwrite`` is false), or files
        of a run gnbench cannot identify, or is not a folder.
    """
    workdir = Path(workdir)
    check_path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(
            f"train.workdir={str(workdir)!r} is a file, not a folder; give a folder path"
        )
    if not workdir.is_dir() or not _holds_run_files(workdir):
        return WorkdirState("fresh")
    stored = read_identity(workdir)
    if stored is not None:
        same = stored["hash"] == identity["hash"]
        diffs = [] if same else differing_keys(stored.get("config") or {}, identity["config"])
        if not same and not diffs:  # Same config, other gnbench version.
            diffs = differing_keys({}, {}, old_version=str(stored.get("version")))
    else:
        config = _read_json(workdir / "config.json")
        if config is None:
            diffs = ["(no identity.json nor config.json: not a gnbench run)"]
        else:  # Written before identity.json existed: compare the configs themselves.
            old = result_config(config)
            new = dict(identity["config"])
            if old.get("train.init_from") and new.get("train.init_from"):
                old.pop("train.init_from"), new.pop("train.init_from")  # A path vs an id.
            diffs = differing_keys(old, new)
    if diffs:
        if overwrite:
            return WorkdirState("replace", stored=stored)
        raise ConfigError(
            f"{workdir} holds another run ({describe_differences(diffs)}); use a new "
            "--config.train.workdir, or --config.train.overwrite=true to delete that run's files"
        )
    summary = _read_json(workdir / "summary.json")
    if summary is not None:
        return WorkdirState("finished", summary=summary, stored=stored)
    return WorkdirState("resume", stored=stored)


def remove_run_files(workdir: str | os.PathLike) -> list[str]:
    """Deletes the files of the run in ``workdir`` (:data:`RUN_FILES` only); returns their
    names. Anything else in the folder stays."""
    removed = []
    for name in RUN_FILES:
        path = Path(workdir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def summary_line(workdir: str | os.PathLike, summary: dict[str, Any]) -> str:
    """One line on a finished run: status, iterations to target, best loss, where the files are.

    Example:
      >>> summary_line("runs/a", {"status": "finished", "steps": 40, "target_loss": 2.6,
      ...     "reached": {"step": 24}, "best_val_loss": 2.512345})
      'gnbench: runs/a holds this run, already finished after 40 iterations: target 2.6 reached at iteration 24, best val loss 2.5123; files: runs/a/summary.json, metrics.jsonl, config.json, ckpt/'
    """  # noqa: E501
    reached = summary.get("reached")
    target = summary.get("target_loss")
    best = summary.get("best_val_loss")
    to_target = (
        f"target {target:g} reached at iteration {reached['step']}"
        if reached
        else f"target {target:g} not reached"
        if isinstance(target, (int, float))
        else "target not reached"
    )
    best_text = f"{best:.5g}" if isinstance(best, (int, float)) else "none"
    return (
        f"gnbench: {workdir} holds this run, already {summary.get('status', '?')} after "
        f"{summary.get('steps', '?')} iterations: {to_target}, best val loss {best_text}; "
        f"files: {Path(workdir) / 'summary.json'}, metrics.jsonl, config.json, ckpt/"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """``<workdir>/.lock``, taken atomically; see the module docstring.

    Example:
      >>> lock = WorkdirLock.acquire("/tmp/gnbench-doc-lock")  # doctest: +SKIP
      >>> lock.release()                                        # doctest: +SKIP
    """

    def __init__(self, path: Path, record: dict[str, Any]):
        self.path = path
        self.record = record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def describe(cls, holder: dict[str, Any]) -> str:
        started = holder.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
        return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {when}"

    @classmethod
    def read(cls, workdir: str | os.PathLike) -> dict[str, Any] | None:
        """The holder's record, ``{}`` for an unreadable lock file, ``None`` without a lock."""
        path = Path(workdir) / LOCK_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @classmethod
    def is_stale(cls, workdir: str | os.PathLike, holder: dict[str, Any]) -> bool:
        """Whether the holder is gone (dead pid on this host, or no heartbeat for a while)."""
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _pid_alive(holder["pid"])
        try:
            age = time.time() - (Path(workdir) / LOCK_FILE).stat().st_mtime
        except FileNotFoundError:
            return True
        return age > STALE_AFTER_S

    @classmethod
    def check(cls, workdir: str | os.PathLike) -> None:
        """Fails at once if a live process holds ``workdir`` (reads only)."""
        holder = cls.read(workdir)
        if holder is not None and not cls.is_stale(workdir, holder):
            raise cls._held_error(workdir, holder)

    @classmethod
    def _held_error(cls, workdir: str | os.PathLike, holder: dict[str, Any]) -> ConfigError:
        lock = Path(workdir) / LOCK_FILE
        return ConfigError(
            f"{workdir} is in use by another run ({cls.describe(holder)}); wait for it to end, "
            f"or delete {lock} if that process is gone"
        )

    @classmethod
    def acquire(cls, workdir: str | os.PathLike) -> WorkdirLock:
        """Takes the lock (the workdir must exist); a stale lock is taken over.

        Raises:
          ConfigError: a live process holds it.
        """
        path = Path(workdir) / LOCK_FILE
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = cls.read(workdir)
                if holder is None:
                    continue  # Released meanwhile: try again.
                if not cls.is_stale(workdir, holder):
                    raise cls._held_error(workdir, holder) from None
                cls._take_over(path, holder)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            lock = cls(path, record)
            lock._start_heartbeat()
            _HELD.add(lock)
            return lock
        raise ConfigError(f"could not take {path}: other runs keep taking it; try again")

    @classmethod
    def _take_over(cls, path: Path, holder: dict[str, Any]) -> None:
        """Moves a stale lock aside (rename is atomic: one taker wins); puts back a lock that
        turned out to be another, live run's."""
        aside = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if moved != holder and moved:
            try:
                os.link(aside, path)  # Fails if a new lock exists: then that one is live.
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        print(
            f"gnbench train: taking over the stale lock {path} of {cls.describe(holder)} "
            "(that process is gone)",
            file=sys.stderr,
        )

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._thread = threading.Thread(target=beat, name="gnbench-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Removes the lock file if it is still this process's."""
        self._stop.set()
        _HELD.discard(self)
        if WorkdirLock.read(self.path.parent) == self.record:
            self.path.unlink(missing_ok=True)


def release_held_locks() -> None:
    """Releases every lock this process holds (the SIGTERM handler of ``gnbench train``)."""
    for lock in list(_HELD):
        lock.release()


def has_checkpoint(ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` holds a complete orbax step folder (named by its step number)."""
    return ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())


def claim_workdir(
    workdir: Path,
    identity: dict[str, Any],
    config: dict[str, Any],
    overwrite: bool,
    main_process: bool,
) -> tuple[WorkdirLock | None, WorkdirState | None]:
    """Creates the workdir and, on process 0, takes its lock, looks again (under the lock) and
    writes ``identity.json`` and ``config.json`` for a new run (deleting another config's run
    files first when ``overwrite``). Returns the lock and what was found.

    Raises:
      ConfigError: a live run holds the workdir, or it cannot be created or written (the
        operating system said no: permissions, a read-only or full disk); one line.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if not main_process:
            return None, None
        lock = WorkdirLock.acquire(workdir)
    except OSError as e:
        raise unwritable(workdir, e) from None
    try:
        found = inspect_workdir(workdir, identity, overwrite)
        if found.kind == "replace":
            removed = remove_run_files(workdir)
            print(
                f"gnbench: train.overwrite: deleted the files of the other run in {workdir} "
                f"({', '.join(removed)})",
                file=sys.stderr,
            )
        if found.kind in ("fresh", "replace") or found.stored is None:
            identity = {**identity, "created": time.time()}
            atomic_write_json(workdir / IDENTITY_FILE, identity)  # First: it names the run.
            if found.kind != "resume":
                atomic_write_json(workdir / "config.json", config)
        else:
            identity = found.stored
        found.stored = identity
    except OSError as e:
        lock.release()
        raise unwritable(workdir, e) from None
    except BaseException:
        lock.release()
        raise
    return lock, found
