"""The prepared token file: ``tokens.bin`` + ``header.json`` (+ the tokenizer's file) per folder.

``tokens.bin`` is a flat array of token ids (``uint16`` when the vocabulary fits, else
``uint32``, native little-endian): the training documents first, then the validation
documents, each followed by the tokenizer's separator (see ``gnbench.data.tokenizers``).
``header.json`` records the format version, tokenizer, vocabulary size, dtype and the token,
document and UTF-8 byte counts of both splits. The split is by document, random but fixed by
``seed``. A folder is written under a temporary name and renamed when complete, so a prepared
folder is always whole; ``TokenFile.open`` still checks the file size against the header.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gnbench.data.sources import NAMED_SOURCES, load_documents
from gnbench.data.tokenizers import Tokenizer, load_tokenizer, make_tokenizer

FORMAT = "gnbench-tokens"
VERSION = 1
TOKENS = "tokens.bin"
HEADER = "header.json"
_REQUIRED = (
    "format",
    "version",
    "tokenizer",
    "vocab_size",
    "dtype",
    "n_tokens",
    "n_train_tokens",
    "n_val_tokens",
)


def split_documents(n_docs: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the train and validation documents (``round(val_fraction * n)``, at least 1
    when ``val_fraction > 0``), each in corpus order; random but fixed by ``seed``.

    Example:
      >>> split_documents(10, 0.2, seed=0)[1]
      [4, 6]
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * n_docs))
    if n_val >= n_docs:
        raise ValueError(
            f"cannot hold out {n_val} validation document(s) out of {n_docs}: the corpus needs "
            "more documents (or use val_fraction=0)"
        )
    order = np.random.default_rng(seed).permutation(n_docs)
    val = sorted(int(i) for i in order[:n_val])
    val_set = set(val)
    return [i for i in range(n_docs) if i not in val_set], val


def _write_tokens(
    f, docs: Sequence[str], tok: Tokenizer, dtype: np.dtype, sep_bytes: int, bar: tqdm
) -> tuple[int, int]:
    n_tokens = n_bytes = 0
    sep = tok.separator_ids
    for doc in docs:
        ids = np.concatenate([tok.encode(doc), sep]).astype(dtype)
        f.write(ids.tobytes())
        n_tokens += ids.size
        nb = len(doc.encode("utf-8"))
        n_bytes += nb + sep_bytes
        bar.update(nb)
    return n_tokens, n_bytes


def prepare(
    source: str,
    out_dir: str | os.PathLike,
    *,
    tokenizer: str = "byte",
    vocab_size: int | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    tokenizer_file: str | os.PathLike | None = None,
    max_documents: int | None = None,
    progress: bool = True,
) -> Path:
    """Tokenizes ``source`` into ``out_dir`` (replacing its contents atomically); returns it.

    ``out_dir`` must be missing, empty or a prepared token folder: any other folder is refused
    (ValueError), never deleted.

    ``bpe`` is trained on the training documents only. ``tokenizer_file`` is a ``.tiktoken``
    file for ``gpt2`` or a ``tokenizer.json`` to reuse for ``bpe``.

    Example:
      >>> prepare("shakespeare", "data/shakespeare-byte")  # doctest: +SKIP
      PosixPath('data/shakespeare-byte')
    """
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / HEADER).is_file():
        raise ValueError(
            f"{out} is not empty and is not a prepared token folder (no {HEADER}); gnbench "
            "never replaces a folder it did not prepare: give another output folder"
        )
    docs = load_documents(source, max_documents=max_documents)
    train_idx, val_idx = split_documents(len(docs), val_fraction, seed)
    train_docs = [docs[i] for i in train_idx]
    val_docs = [docs[i] for i in val_idx]
    tok = make_tokenizer(
        tokenizer, train_docs, vocab_size=vocab_size, tokenizer_file=tokenizer_file
    )
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 65535 else np.uint32)
    sep_bytes = 0 if tok.eot_id is not None else len(tok.decode(tok.separator_ids).encode())

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the prepared folder is shared data
    try:
        total = sum(len(d.encode("utf-8")) for d in docs)
        with (
            open(tmp / TOKENS, "wb") as f,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                disable=not progress,
                desc=f"tokenizing {source} ({tok.name})",
            ) as bar,
        ):
            n_train, train_bytes = _write_tokens(f, train_docs, tok, dtype, sep_bytes, bar)
            n_val, val_bytes = _write_tokens(f, val_docs, tok, dtype, sep_bytes, bar)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "source": source,
            "tokenizer": tok.name,
            "tokenizer_file": tok.save(tmp),
            "vocab_size": int(tok.vocab_size),
            "eot_id": tok.eot_id,
            "dtype": dtype.name,
            "n_tokens": n_train + n_val,
            "n_train_tokens": n_train,
            "n_val_tokens": n_val,
            "n_train_docs": len(train_docs),
            "n_val_docs": len(val_docs),
            "n_train_bytes": train_bytes,
            "n_val_bytes": val_bytes,
            "val_fraction": val_fraction,
            "seed": seed,
        }
        (tmp / HEADER).write_text(json.dumps(header, indent=2) + "\n")
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class TokenFile:
    """A prepared token folder, memory-mapped; open with ``TokenFile.open(directory)``.

    Example:
      >>> tf = TokenFile.open("data/shakespeare-byte")  # doctest: +SKIP
      >>> tf.vocab_size, tf.train.dtype                  # doctest: +SKIP
      (256, dtype('uint16'))
    """

    def __init__(self, directory: Path, header: dict[str, Any], tokens: np.ndarray) -> None:
        self.directory = directory
        self.header = header
        self.tokens = tokens
        n_train = int(header["n_train_tokens"])
        self.train: np.ndarray = tokens[:n_train]
        self.val: np.ndarray = tokens[n_train:]

    @classmethod
    def open(cls, directory: str | os.PathLike) -> TokenFile:
        """Memory-maps ``directory``/tokens.bin after validating it against header.json."""
        d = Path(directory)
        hpath, tpath = d / HEADER, d / TOKENS
        if not hpath.is_file():
            raise FileNotFoundError(
                f"{hpath} is missing: {d} is not a prepared token folder; run "
                f"`gnbench data prepare --source ... --out {d}`"
            )
        try:
            header = json.loads(hpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{hpath} is corrupt (not JSON: {e}); prepare {d} again") from None
        missing = [k for k in _REQUIRED if not isinstance(header, dict) or k not in header]
        if missing:
            raise ValueError(f"{hpath} is corrupt: missing fields {missing}; prepare {d} again")
        if header["format"] != FORMAT or header["version"] != VERSION:
            raise ValueError(
                f"{hpath}: format {header['format']!r} version {header['version']} is not "
                f"{FORMAT!r} version {VERSION}; prepare {d} again"
            )
        if header["dtype"] not in ("uint16", "uint32"):
            raise ValueError(f"{hpath}: dtype {header['dtype']!r} is not uint16 or uint32")
        n = int(header["n_tokens"])
        if int(header["n_train_tokens"]) + int(header["n_val_tokens"]) != n:
            raise ValueError(f"{hpath} is corrupt: n_train_tokens + n_val_tokens != n_tokens={n}")
        if not tpath.is_file():
            raise FileNotFoundError(f"{tpath} is missing; prepare {d} again")
        dtype = np.dtype(header["dtype"])
        expected, actual = n * dtype.itemsize, tpath.stat().st_size
        if actual != expected:
            raise ValueError(
                f"{tpath} has {actual} bytes but {hpath} expects {expected} bytes "
                f"({n} tokens x {dtype.itemsize} bytes): the file is truncated or corrupt; "
                f"prepare {d} again"
            )
        if n == 0:
            raise ValueError(f"{tpath} holds no tokens; prepare {d} from a non-empty corpus")
        tokens = np.memmap(tpath, dtype=dtype, mode="r", shape=(n,))
        return cls(d, header, tokens)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer (the model's embedding rows must cover it)."""
        return int(self.header["vocab_size"])

    @property
    def source(self) -> str:
        """The corpus source the tokens were prepared from."""
        return str(self.header.get("source", "?"))

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per token on the validation split (all tokens if it is empty);
        ``loss_nats_per_token / (ln 2 * bytes_per_token)`` is bits per byte."""
        h = self.header
        toks, nbytes = h["n_val_tokens"], h.get("n_val_bytes")
        if not toks:
            toks, nbytes = h["n_train_tokens"], h.get("n_train_bytes")
        if not nbytes or not toks:
            return 1.0
        return float(nbytes) / float(toks)

    def tokenizer(self) -> Tokenizer:
        """The tokenizer that produced the tokens (for decoding samples)."""
        return load_tokenizer(
            self.directory, self.header["tokenizer"], self.header.get("tokenizer_file")
        )

    def check_vocab(self, model_vocab: int, sample: int = 1 << 20) -> None:
        """Raises ValueError if the header's vocabulary or the largest id in a sample of about
        ``sample`` tokens (evenly spaced blocks) does not fit ``model_vocab`` embedding rows.

        Example:
          >>> TokenFile.open("data/shakespeare-byte").check_vocab(256)  # doctest: +SKIP
        """
        if self.vocab_size > model_vocab:
            raise ValueError(
                f"token file {self.directory} has vocab_size {self.vocab_size} but the model's "
                f"vocab_size is {model_vocab}: the model needs at least {self.vocab_size}"
            )
        n, blocks = self.tokens.size, 64
        if n <= sample:
            top = int(self.tokens.max())
        else:
            width = sample // blocks
            starts = np.linspace(0, n - width, blocks).astype(np.int64)
            top = max(int(self.tokens[s : s + width].max()) for s in starts)
        if top >= model_vocab:
            raise ValueError(
                f"token file {self.directory} holds token id {top} but the model's vocab_size is "
                f"{model_vocab} (header vocab_size {self.vocab_size}): the file is corrupt"
            )


def default_data_dir(
    source: str, tokenizer: str, vocab_size: int | None = None, base: str | os.PathLike = "data"
) -> Path:
    """Folder for a prepared corpus: ``<base>/<source>-<tokenizer>`` (``bpe<vocab>`` for bpe);
    paths and ``hf:`` sources get a readable name plus a short hash of the full source.

    Example:
      >>> str(default_data_dir("shakespeare", "byte"))
      'data/shakespeare-byte'
      >>> str(default_data_dir("sotu", "bpe", 4096, base="/tmp/d"))
      '/tmp/d/sotu-bpe4096'
    """
    if tokenizer == "bpe":
        if vocab_size is None:
            raise ValueError("tokenizer 'bpe' needs a vocab_size")
        tok = f"bpe{vocab_size}"
    else:
        tok = tokenizer
    if source in NAMED_SOURCES:
        name = source
    else:
        full = source if source.startswith("hf:") else str(Path(source).resolve())
        stem = Path(source.rstrip("/")).stem if not source.startswith("hf:") else source[3:]
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", stem).strip("-.")[:40] or "corpus"
        name = f"{slug}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    return Path(base) / f"{name}-{tok}"


def ensure_prepared(
    source: str,
    *,
    tokenizer: str = "byte",
    vocab_size: int | None = None,
    base: str | os.PathLike = "data",
    **prepare_kwargs: Any,
) -> Path:
    """The prepared folder for (source, tokenizer, vocab), preparing it first if absent.

    ``vocab_size`` only matters for ``bpe``. Extra keyword arguments go to ``prepare``.

    Example:
      >>> TokenFile.open(ensure_prepared("shakespeare", tokenizer="byte"))  # doctest: +SKIP
    """
    out = default_data_dir(source, tokenizer, vocab_size if tokenizer == "bpe" else None, base)
    if (out / HEADER).is_file():
        return out
    return prepare(
        source,
        out,
        tokenizer=tokenizer,
        vocab_size=vocab_size if tokenizer == "bpe" else None,
        **prepare_kwargs,
    )
