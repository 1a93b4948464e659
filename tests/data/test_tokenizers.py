"""Tokenizers: round trips, saved files, and vocabulary files for gpt2-style BPE."""

from __future__ import annotations

import numpy as np
import pytest

from gnbench.data import tokenizers as tk
from tests.data.helpers import make_docs, write_tiktoken

TEXT = "To be, or not to be: that is the question.\n\nÜber naïve café — ∑ 😀\n"


def test_byte_round_trip():
    tok = tk.make_tokenizer("byte")
    ids = tok.encode(TEXT)
    assert ids.dtype == np.int32 and ids.max() < 256 == tok.vocab_size
    assert ids.size == len(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT
    assert tok.eot_id is None and tok.decode(tok.separator_ids) == "\n\n"


def test_bpe_round_trip_and_reload(tmp_path):
    tok = tk.make_tokenizer("bpe", make_docs() + [TEXT], vocab_size=400)
    assert 257 < tok.vocab_size <= 400
    assert tok.eot_id == 0 and tok.separator_ids.tolist() == [0]
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert ids.size < len(TEXT.encode())  # merges happened
    name = tok.save(tmp_path)
    again = tk.load_tokenizer(tmp_path, "bpe", name)
    assert again.encode(TEXT).tolist() == ids.tolist()
    assert again.vocab_size == tok.vocab_size


def test_bpe_vocab_too_small():
    with pytest.raises(ValueError, match="at least 257"):
        tk.train_bpe(["abc"], vocab_size=100)


def test_bpe_long_text_is_encoded_in_chunks(monkeypatch):
    tok = tk.train_bpe(make_docs(), vocab_size=300)
    monkeypatch.setattr(tk, "CHUNK_CHARS", 50)
    text = "\n".join(make_docs(2))
    assert tok.decode(tok.encode(text)) == text


def test_text_chunks_rejoin():
    text = "line one\nline two\n" * 50 + "no newline at the end " * 20
    pieces = list(tk.text_chunks(text, max_chars=64))
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= 64


def test_tiktoken_file_round_trip(tmp_path):
    path = write_tiktoken(tmp_path / "tiny.tiktoken", [b"th", b"he", b"the", b" the"])
    tok = tk.make_tokenizer("gpt2", tokenizer_file=path)
    assert tok.vocab_size == 261 and tok.eot_id == 260
    ids = tok.encode("the theme")
    assert ids.tolist()[:1] == [258]  # "the" merged into one token
    assert 259 in ids.tolist()  # " the"
    assert tok.decode(ids) == "the theme"
    assert tok.decode(tok.encode(TEXT)) == TEXT
    (tmp_path / "saved").mkdir()
    name = tok.save(tmp_path / "saved")
    assert tk.load_tokenizer(tmp_path / "saved", "gpt2", name).encode("the").tolist() == [258]


def test_bad_tiktoken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tiktoken"):
        tk.TiktokenTokenizer(tmp_path / "missing.tiktoken")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-base64!! 0\n")
    with pytest.raises(ValueError, match="bad.tiktoken:1"):
        tk.TiktokenTokenizer(bad)
    gap = tmp_path / "gap.tiktoken"
    gap.write_text("YQ== 0\nYg== 5\n")
    with pytest.raises(ValueError, match="without gaps"):
        tk.TiktokenTokenizer(gap)


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="byte, bpe, gpt2"):
        tk.make_tokenizer("sentencepiece")
