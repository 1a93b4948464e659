"""Data: corpus sources, tokenizers, the prepared token file and the grain input pipeline.

Example:
  >>> from gnbench import data                                           # doctest: +SKIP
  >>> tf = data.TokenFile.open(data.ensure_prepared("shakespeare"))      # doctest: +SKIP
  >>> it = data.train_iterator(tf, seq_len=64, micro_batch=16,  # doctest: +SKIP
  ...     micro_batches=8, seed=0)
  >>> next(it).shape                                                     # doctest: +SKIP
  (8, 16, 65)
"""

from gnbench.data.pipeline import (
    PackedWindows,
    TrainIterator,
    steps_per_epoch,
    train_iterator,
    validation_batches,
)
from gnbench.data.sources import documents_from_records, load_documents, parse_hf_source
from gnbench.data.tokenfile import (
    TokenFile,
    default_data_dir,
    ensure_prepared,
    prepare,
    split_documents,
)
from gnbench.data.tokenizers import (
    TOKENIZERS,
    BPETokenizer,
    ByteTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    load_tokenizer,
    make_tokenizer,
    train_bpe,
)

__all__ = [
    "TOKENIZERS",
    "BPETokenizer",
    "ByteTokenizer",
    "PackedWindows",
    "TiktokenTokenizer",
    "TokenFile",
    "Tokenizer",
    "TrainIterator",
    "default_data_dir",
    "documents_from_records",
    "ensure_prepared",
    "load_documents",
    "load_tokenizer",
    "make_tokenizer",
    "parse_hf_source",
    "prepare",
    "split_documents",
    "steps_per_epoch",
    "train_bpe",
    "train_iterator",
    "validation_batches",
]
