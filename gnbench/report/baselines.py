"""Where a sweep's start and target sit against the corpus's easy statistics.

The report states the unigram and bigram cross-entropies of the exact validation windows the
runs evaluate on (:mod:`gnbench.data.ngram`, counted on the training split), next to the runs'
starting loss and the target: a target above the bigram level measures how fast a method learns
a bigram table, not how it optimizes a model past it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gnbench.report.io import RunFiles
from gnbench.report.results import RunResult, config_value
from gnbench.report.stats import median


def split_entropies(config: dict[str, Any] | None, root: Path | None = None) -> dict[str, Any]:
    """Unigram and bigram cross-entropies of a run's validation windows.

    Args:
      config: a run's resolved config (``config.json``).
      root: the folder relative ``data.dir`` paths start from (default: the working folder).

    Returns:
      ``{"unigram", "bigram", "tokens"}`` (nats/token; tokens scored), or ``{}`` when the token
      file is not on this machine or the config lacks a data section.
    """
    from gnbench.data.ngram import ngram_cross_entropies
    from gnbench.data.tokenfile import TokenFile, default_data_dir

    data = config_value(config, "data")
    if not isinstance(data, dict):
        return {}
    try:
        base = Path(data["dir"])
        base = base if base.is_absolute() or root is None else root / base
        vocab = data.get("vocab_size") if data["tokenizer"] == "bpe" else None
        folder = default_data_dir(data["source"], data["tokenizer"], vocab, base=base)
        tokens = TokenFile.open(folder)
        width = int(data["seq_len"]) + 1
        n = min(int(data["val_sequences"]), tokens.val.size // width)
        n = n // int(data["micro_batch"]) * int(data["micro_batch"])
    except (KeyError, OSError, ValueError, TypeError):
        return {}
    if n < 1:
        return {}
    val = tokens.val[: n * width].reshape(n, width)
    out = ngram_cross_entropies(tokens.train, val, tokens.vocab_size)
    return {**out, "tokens": n * (width - 1)}


def start_loss(results: list[RunResult]) -> float:
    """The median first evaluation of the runs (their starting validation loss)."""
    firsts = [r.evals[0]["val_loss"] for r in results if r.evals]
    return median([x for x in firsts if x is not None and math.isfinite(x)])


def baseline_line(runs: list[RunFiles], results: list[RunResult], target: float) -> str | None:
    """One report line: the entropies of the validation set, the start and the target."""
    config = next((r.config for r in runs if r.config), None)
    e = split_entropies(config)
    if not e:
        return None
    start = start_loss(results)
    where = "below" if target < e["bigram"] else "above"
    return (
        f"- Validation set: {e['tokens']:,} tokens. A unigram table scores "
        f"{e['unigram']:.3f} nats/token on it, a bigram table {e['bigram']:.3f} (counted on the "
        f"training split, gnbench/data/ngram.py); the runs start at {start:.3f} (median first "
        f"evaluation) and the target {target:g} is {where} the bigram level."
    )


__all__ = ["baseline_line", "split_entropies", "start_loss"]
