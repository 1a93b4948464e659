"""Fixtures for the data tests: a small corpus folder and a synthetic token folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.helpers import make_docs, write_token_dir


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A folder of 12 small ``*.txt`` documents (one in a sub-folder) and a non-txt file."""
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    for i, doc in enumerate(make_docs()):
        (d / ("sub" if i == 5 else "") / f"doc{i:03d}.txt").write_text(doc)
    (d / "ignored.md").write_text("not a txt file")
    return d


@pytest.fixture
def arange_dir(tmp_path: Path) -> Path:
    """Train tokens 0..9999 and validation tokens 10000..10999 (each id marks its position)."""
    n_train, n_val = 10_000, 1_000
    return write_token_dir(
        tmp_path / "arange", np.arange(n_train), np.arange(n_train, n_train + n_val), 70_000
    )
