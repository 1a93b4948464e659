"""Files every layer writes and reads: atomic text and JSON writes, and a JSON reader that names
the file it cannot read.

Every file gnbench writes (a run's identity, config and summary, a sweep's plan and status, a
report) goes through a temporary file in the same folder and ``os.replace``, so a reader (another
process, a rerun after a crash) never sees half a file. Standard library only: the trainer, the
sweeps and the reports all import it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file in the same folder and a rename.

    Args:
      path: destination file; its folder is created if missing.
      text: the content.

    Example:
      >>> atomic_write_text("/tmp/gnbench_doc.txt", "hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes ``data`` as indented, key-sorted JSON, atomically (see :func:`atomic_write_text`).

    Example:
      >>> atomic_write_json("/tmp/gnbench_doc.json", {"b": 1, "a": 2})
    """
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class CorruptFileError(ValueError):
    """A result file that exists but cannot be read as gnbench wrote it; the message names it."""


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if the file does not exist.

    Raises:
      CorruptFileError: the file is not a JSON object (named in the message).

    Example:
      >>> read_json("/nonexistent/summary.json") is None
      True
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # Unreadable, not UTF-8 or not JSON.
        text = " ".join(str(e).split())[:200]
        raise CorruptFileError(f"{path} cannot be read ({type(e).__name__}: {text})") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


__all__ = ["CorruptFileError", "atomic_write_json", "atomic_write_text", "read_json"]
