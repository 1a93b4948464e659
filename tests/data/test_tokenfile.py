"""The prepared token folder: layout, document split, validation of corrupt files, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gnbench.data import TokenFile, default_data_dir, ensure_prepared, prepare, split_documents
from gnbench.data.cli import main as data_main
from gnbench.data.sources import load_documents
from gnbench.data.tokenizers import ByteTokenizer
from tests.data.helpers import write_tiktoken


@pytest.fixture
def byte_dir(corpus_dir, tmp_path):
    return prepare(str(corpus_dir), tmp_path / "tok", val_fraction=0.25, seed=3, progress=False)


def test_header_and_layout(byte_dir, corpus_dir):
    tf = TokenFile.open(byte_dir)
    h = tf.header
    assert h["tokenizer"] == "byte" and h["vocab_size"] == 256 and h["dtype"] == "uint16"
    assert (h["n_train_docs"], h["n_val_docs"]) == (9, 3)
    assert tf.train.size == h["n_train_tokens"] and tf.val.size == h["n_val_tokens"]
    assert h["n_tokens"] == h["n_train_tokens"] + h["n_val_tokens"]
    assert (byte_dir / "tokens.bin").stat().st_size == 2 * h["n_tokens"]
    assert tf.bytes_per_token == pytest.approx(1.0)
    # train documents first, then validation documents, each followed by "\n\n"
    docs = load_documents(str(corpus_dir))
    train_idx, val_idx = split_documents(len(docs), 0.25, seed=3)
    order = [docs[i] + "\n\n" for i in train_idx + val_idx]
    assert np.array_equal(tf.tokens, ByteTokenizer().encode("".join(order)))
    assert not list(byte_dir.parent.glob(".tok*"))  # no temporary folder left behind


def test_split_is_by_document(byte_dir):
    tf = TokenFile.open(byte_dir)
    tok = tf.tokenizer()
    train_text, val_text = tok.decode(tf.train), tok.decode(tf.val)
    val_markers = {w for w in val_text.split() if w.startswith("DOC")}
    train_markers = {w for w in train_text.split() if w.startswith("DOC")}
    assert len(val_markers) == 3 and len(train_markers) == 9
    assert not val_markers & train_markers


def test_split_is_deterministic():
    assert split_documents(50, 0.1, seed=1) == split_documents(50, 0.1, seed=1)
    assert split_documents(50, 0.1, seed=1) != split_documents(50, 0.1, seed=2)
    train, val = split_documents(50, 0.1, seed=1)
    assert len(val) == 5 and sorted(train + val) == list(range(50))
    with pytest.raises(ValueError, match="more documents"):
        split_documents(1, 0.05, seed=0)


def test_truncated_file_names_both_sizes(byte_dir):
    path = byte_dir / "tokens.bin"
    full = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(full - 10)
    with pytest.raises(ValueError, match=f"{full - 10} bytes.*expects {full} bytes"):
        TokenFile.open(byte_dir)


def test_missing_or_corrupt_header(byte_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="header.json is missing"):
        TokenFile.open(tmp_path / "nowhere")
    header = byte_dir / "header.json"
    saved = header.read_text()
    header.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        TokenFile.open(byte_dir)
    header.write_text(json.dumps({"format": "gnbench-tokens"}))
    with pytest.raises(ValueError, match="missing fields"):
        TokenFile.open(byte_dir)
    h = json.loads(saved)
    h["n_val_tokens"] += 1
    header.write_text(json.dumps(h))
    with pytest.raises(ValueError, match="n_train_tokens"):
        TokenFile.open(byte_dir)


def test_check_vocab(byte_dir):
    tf = TokenFile.open(byte_dir)
    tf.check_vocab(256)
    tf.check_vocab(512)
    with pytest.raises(ValueError, match="vocab_size 256.*vocab_size is 100"):
        tf.check_vocab(100)
    del tf
    # a token id beyond the model's vocabulary (header still says 256): caught by the sample
    tokens = np.fromfile(byte_dir / "tokens.bin", np.uint16)
    tokens[7] = 300
    tokens.tofile(byte_dir / "tokens.bin")
    with pytest.raises(ValueError, match="token id 300.*vocab_size is 256"):
        TokenFile.open(byte_dir).check_vocab(256)


def test_bpe_and_gpt2_prepare(corpus_dir, tmp_path):
    bpe = TokenFile.open(
        prepare(str(corpus_dir), tmp_path / "bpe", tokenizer="bpe", vocab_size=300, progress=False)
    )
    assert (tmp_path / "bpe" / "tokenizer.json").is_file()
    assert bpe.header["eot_id"] == 0 and bpe.header["n_val_docs"] == 1
    assert int((bpe.tokens == 0).sum()) == 12  # one end-of-text per document
    assert bpe.tokenizer().decode(bpe.val[:-1]).startswith("DOC")
    assert bpe.bytes_per_token > 1.0
    vocab = write_tiktoken(tmp_path / "big.tiktoken", [b"DO", b"DOC"], n_extra=70_000)
    big = TokenFile.open(
        prepare(
            str(corpus_dir),
            tmp_path / "big",
            tokenizer="gpt2",
            tokenizer_file=vocab,
            progress=False,
        )
    )
    assert big.header["dtype"] == "uint32" and big.vocab_size == 70_259
    assert int(big.tokens[-1]) == 70_258  # end-of-text after the last rank
    assert big.tokenizer().decode(big.train[:3]).startswith("DOC0")


def test_default_dir_and_ensure_prepared(corpus_dir, tmp_path):
    assert default_data_dir("shakespeare", "byte") == default_data_dir("shakespeare", "byte", 99)
    assert str(default_data_dir("sotu", "bpe", 4096, base="d")) == "d/sotu-bpe4096"
    path_dir = default_data_dir(str(corpus_dir), "gpt2", base="d")
    assert path_dir.name.startswith("corpus-") and path_dir.name.endswith("-gpt2")
    assert default_data_dir("hf:org/set:cfg", "byte").name.startswith("org-set-cfg-")
    with pytest.raises(ValueError, match="vocab_size"):
        default_data_dir("sotu", "bpe")
    out = ensure_prepared(str(corpus_dir), tokenizer="byte", base=tmp_path, progress=False)
    stamp = os.stat(out / "tokens.bin").st_mtime_ns
    assert ensure_prepared(str(corpus_dir), tokenizer="byte", base=tmp_path) == out
    assert os.stat(out / "tokens.bin").st_mtime_ns == stamp  # not prepared twice


def test_cli_prepare_and_info(corpus_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        data_main(
            ["prepare", "--source", str(corpus_dir), "--out", str(out), "--val-fraction", "0.2"]
        )
        == 0
    )
    assert "prepared" in capsys.readouterr().out
    assert data_main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '"n_val_docs": 2' in printed and "DOC0" in printed
    other = tmp_path / "cli2"
    assert data_main(["prepare", "--source", str(tmp_path / "missing"), "--out", str(other)]) == 1
    assert "missing" in capsys.readouterr().err
    assert data_main(["prepare", "--source", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "add --overwrite to replace it" in capsys.readouterr().err  # out is a token folder.
    assert data_main(["info", str(tmp_path / "missing")]) == 1
    with pytest.raises(SystemExit):
        data_main(["prepare", "--tokenizer", "nope"])
