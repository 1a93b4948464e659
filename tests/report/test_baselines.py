"""The report's n-gram line reads the very validation windows a run evaluates on."""

import numpy as np
import pytest

from gnbench.data.ngram import ngram_cross_entropies
from gnbench.data.tokenfile import TokenFile, default_data_dir, prepare
from gnbench.report.baselines import baseline_line, split_entropies
from gnbench.report.io import RunFiles
from gnbench.report.results import run_result
from tests.english_corpus import write_corpus


def test_split_entropies_score_the_runs_validation_windows(tmp_path):
    (tmp_path / "texts").mkdir()
    text = write_corpus(tmp_path / "texts")
    data_dir = tmp_path / "data"
    folder = prepare(str(text), default_data_dir(str(text), "byte", base=data_dir), progress=False)
    config = {
        "data": dict(
            source=str(text),
            tokenizer="byte",
            vocab_size=256,
            dir=str(data_dir),
            seq_len=16,
            micro_batch=4,
            val_sequences=10,
        )
    }
    e = split_entropies(config)
    tokens = TokenFile.open(folder)
    # 10 sequences rounded down to whole micro-batches of 4: the first 8 windows of 17 tokens.
    expected = ngram_cross_entropies(tokens.train, tokens.val[: 8 * 17].reshape(8, 17), 256)
    assert e == {**expected, "tokens": 8 * 16}
    assert e["bigram"] < e["unigram"] < np.log(256)
    # The line in the report: the start (median first evaluation) and which side the target is.
    evals = [dict(kind="eval", step=s, val_loss=v) for s, v in [(0, 5.5), (1, 1.0)]]
    entry = dict(id="r", method="m", setting={}, seed=0, scan_value=None)
    runs = [RunFiles(entry, config, {"status": "finished"}, evals)]
    results = [run_result(runs[0], target=1.0)]
    line = baseline_line(runs, results, target=1.0)
    assert f"{e['bigram']:.3f}" in line and "start at 5.500" in line
    assert "below the bigram level" in line
    assert "above the bigram level" in baseline_line(runs, results, target=e["bigram"] + 0.1)
    # No token file on this machine: no line, no crash.
    assert split_entropies({"data": {**config["data"], "dir": str(tmp_path / "none")}}) == {}
    assert baseline_line([RunFiles(entry, None, None, [])], [], 1.0) is None


def test_ngram_line_needs_a_data_section():
    assert split_entropies(None) == {} and split_entropies({"train": {}}) == {}
    with pytest.raises(ValueError, match="discount"):
        ngram_cross_entropies(np.arange(4), np.arange(4).reshape(1, 4), 4, discount=1.0)
