"""Helpers for the data tests: small corpora, hand-written token folders and vocab files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from gnbench.data import tokenfile

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_docs(n_docs: int = 12, paragraphs: int = 6) -> list[str]:
    """Documents with a unique marker (``DOC<i>``) in every paragraph."""
    rng = np.random.default_rng(123)
    docs = []
    for i in range(n_docs):
        paras = []
        for j in range(paragraphs):
            words = " ".join(rng.choice(WORDS, size=30))
            paras.append(f"DOC{i:03d} paragraph {j}: {words}.")
        docs.append("\n\n".join(paras))
    return docs


def write_token_dir(path: Path, train: np.ndarray, val: np.ndarray, vocab_size: int) -> Path:
    """A token folder written by hand (bypassing ``prepare``)."""
    dtype = np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)
    path.mkdir(parents=True, exist_ok=True)
    np.concatenate([train, val]).astype(dtype).tofile(path / tokenfile.TOKENS)
    header = {
        "format": tokenfile.FORMAT,
        "version": tokenfile.VERSION,
        "source": "synthetic",
        "tokenizer": "byte",
        "tokenizer_file": None,
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "n_tokens": int(train.size + val.size),
        "n_train_tokens": int(train.size),
        "n_val_tokens": int(val.size),
    }
    (path / tokenfile.HEADER).write_text(json.dumps(header))
    return path


def write_tiktoken(path: Path, merges: list[bytes], n_extra: int = 0) -> Path:
    """A ``.tiktoken`` file: the 256 bytes, then ``merges``, then ``n_extra`` filler tokens."""
    tokens = [bytes([i]) for i in range(256)] + merges
    filler = (b"\xff\xfe" + i.to_bytes(3, "big") for i in range(n_extra))
    tokens += list(filler)
    lines = [f"{base64.b64encode(t).decode()} {r}" for r, t in enumerate(tokens)]
    path.write_text("\n".join(lines) + "\n")
    return path
