"""Whether a workdir path can hold a run: checked before anything is created (reads only).

A file in the path, a name longer than the file system allows, or a folder without write
permission fails at once with one line (:class:`ConfigError`) naming the path; what only the
first write can tell (a read-only or full disk; root ignores permissions) fails then, in one line
too (:func:`unwritable`).
"""

from __future__ import annotations

import os
from pathlib import Path

from gnbench.train.validation import ConfigError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a name too long to look up counts as missing)."""
    probe = path
    while probe != probe.parent:
        try:
            if probe.exists():
                return probe
        except OSError:  # ENAMETOOLONG: no such file can exist.
            pass
        probe = probe.parent
    return probe


def check_path(workdir: str | os.PathLike) -> None:
    """Fails unless ``workdir`` could be a folder: no file in its path, no name longer than
    the file system allows; reads only."""
    path = Path(workdir).absolute()
    probe = _nearest_existing(path)
    if not probe.is_dir():
        raise ConfigError(
            f"train.workdir={str(workdir)!r} cannot be created: {probe} is a file, not a folder"
        )
    name_max = os.pathconf(probe, "PC_NAME_MAX")
    for part in path.relative_to(probe).parts:  # The folders still to create.
        if len(os.fsencode(part)) > name_max:
            raise ConfigError(
                f"train.workdir={str(workdir)[:60]!r}... cannot be created: the name "
                f"{part[:20]!r}... is longer than the {name_max} bytes a file name may have "
                "here; give a shorter --config.train.workdir"
            )


def check_writable(workdir: str | os.PathLike) -> None:
    """Fails unless ``workdir`` (or, when missing, its nearest existing parent) is a writable
    folder; creates nothing."""
    check_path(workdir)
    probe = _nearest_existing(Path(workdir).absolute())
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"train.workdir={str(workdir)!r} is not writable ({probe} denies writing); give "
            "another --config.train.workdir"
        )


def unwritable(workdir: Path, e: OSError) -> ConfigError:
    """The error for a workdir the operating system refused to create or write."""
    where = f" ({e.filename})" if e.filename else ""
    return ConfigError(
        f"train.workdir={str(workdir)!r} cannot be written: {e.strerror or e}{where}; give "
        "another --config.train.workdir, or free space / fix permissions and rerun"
    )
