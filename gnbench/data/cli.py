"""``gnbench data prepare | info``: tokenize a corpus into a token folder, or inspect one.

Examples:
  gnbench data prepare --source shakespeare --tokenizer byte
  gnbench data prepare --source sotu --tokenizer bpe --vocab-size 4096 --out data/sotu-bpe4096
  gnbench data prepare --source corpus.txt --tokenizer gpt2 --tokenizer-file gpt2.tiktoken
  gnbench data info data/shakespeare-byte
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gnbench.data.sources import VALID_SOURCES
from gnbench.data.tokenfile import HEADER, TokenFile, default_data_dir, prepare
from gnbench.data.tokenizers import TOKENIZERS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gnbench data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="tokenize a corpus into <out>/tokens.bin + header.json")
    prep.add_argument("--source", default="shakespeare", help=VALID_SOURCES)
    prep.add_argument("--tokenizer", default="byte", choices=TOKENIZERS)
    prep.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="bpe vocabulary size (default 8192; ignored by byte and gpt2)",
    )
    prep.add_argument(
        "--out", default=None, help="output folder (default: data/<source>-<tokenizer>)"
    )
    prep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out when it holds a token folder prepared with other settings "
        "(a folder gnbench did not prepare is never replaced)",
    )
    prep.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="fraction of documents held out for validation",
    )
    prep.add_argument("--seed", type=int, default=0, help="seed of the document split")
    prep.add_argument(
        "--tokenizer-file",
        default=None,
        help="gpt2: a .tiktoken ranks file; bpe: a tokenizer.json to reuse",
    )
    prep.add_argument(
        "--max-documents",
        type=int,
        default=None,
        help="cap on documents (hf: sources default to 100000)",
    )
    info = sub.add_parser("info", help="print a token folder's header and a decoded sample")
    info.add_argument("dir", help="a prepared token folder")
    info.add_argument("--sample-tokens", type=int, default=200)
    return p


def _refuse_out(out: Path, args: argparse.Namespace, vocab: int | None) -> str | None:
    """Why ``prepare`` must not write ``out`` (one line), ``"same"`` when ``out`` already holds
    this preparation, or ``None`` to go ahead.

    ``out`` may be missing, empty, or a token folder (``header.json``) replaced with
    ``--overwrite``; anything else is not gnbench's to delete.
    """
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder"
    if not out.is_dir() or not any(out.iterdir()):
        return None
    try:
        header = json.loads((out / HEADER).read_text())
    except (OSError, ValueError):
        return (
            f"--out {out} is not empty and is not a prepared token folder (no readable "
            f"{HEADER}); gnbench never replaces a folder it did not prepare: give another --out"
        )
    if args.overwrite:
        return None
    wanted = dict(source=args.source, val_fraction=args.val_fraction, seed=args.seed)
    if args.tokenizer == "bpe":
        wanted["vocab_size"] = vocab
    same = header.get("tokenizer") == args.tokenizer and all(
        header.get(k) == v for k, v in wanted.items()
    )
    if same and args.tokenizer_file is None and args.max_documents is None:
        return "same"
    return (
        f"--out {out} already holds a prepared token folder (source {header.get('source')!r}, "
        f"tokenizer {header.get('tokenizer')!r}); add --overwrite to replace it, or give "
        "another --out"
    )


def _bad_number(args: argparse.Namespace) -> str | None:
    """Why a number of ``prepare`` or ``info`` cannot be meant (one line), or ``None``."""
    checks = {  # dest -> (ok, what it must be)
        "max_documents": (lambda v: v >= 1, "an integer >= 1 (omit it for the whole corpus)"),
        "vocab_size": (lambda v: v >= 1, "an integer >= 1"),
        "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "sample_tokens": (lambda v: v >= 0, "an integer >= 0"),
    }
    for dest, (ok, need) in checks.items():
        value = getattr(args, dest, None)
        if value is not None and not ok(value):
            return f"--{dest.replace('_', '-')} {value} must be {need}"
    return None


def main(argv: list[str]) -> int:
    """Runs ``gnbench data ...``; returns the exit code.

    Example:
      >>> main(["info", "data/shakespeare-byte"])  # doctest: +SKIP
      0
    """
    args = _parser().parse_args(argv)
    bad = _bad_number(args)
    if bad:
        print(f"gnbench data {args.command}: {bad}", file=sys.stderr)
        return 2
    if args.command == "prepare":
        vocab = args.vocab_size
        if args.tokenizer == "bpe" and vocab is None:
            vocab = 8192
        out = Path(args.out or default_data_dir(args.source, args.tokenizer, vocab))
        refusal = _refuse_out(out, args, vocab)
        if refusal == "same":
            print(f"{out} already holds this corpus prepared the same way; --overwrite redoes it")
            return 0
        if refusal:
            print(f"gnbench data prepare: {refusal}", file=sys.stderr)
            return 1
        tic = time.perf_counter()
        try:
            out = prepare(
                args.source,
                out,
                tokenizer=args.tokenizer,
                vocab_size=vocab,
                val_fraction=args.val_fraction,
                seed=args.seed,
                tokenizer_file=args.tokenizer_file,
                max_documents=args.max_documents,
            )
        except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
            print(f"gnbench data prepare: {e}", file=sys.stderr)
            return 1
        h = TokenFile.open(out).header
        print(
            f"prepared {out} in {time.perf_counter() - tic:.1f} s: {h['n_train_tokens']} train "
            f"tokens ({h['n_train_docs']} docs), {h['n_val_tokens']} validation tokens "
            f"({h['n_val_docs']} docs), vocab {h['vocab_size']}"
        )
        return 0
    try:
        tf = TokenFile.open(args.dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"gnbench data info: {e}", file=sys.stderr)
        return 1
    print(json.dumps(tf.header, indent=2))
    print(f"bytes per token (validation): {tf.bytes_per_token:.3f}")
    ids = tf.train[: args.sample_tokens]
    print(f"--- first {ids.size} train tokens, decoded ---")
    print(tf.tokenizer().decode(ids))
    return 0
