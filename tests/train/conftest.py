"""A small real-text corpus and a fast config for trainer tests."""

import pytest

from experiments import tiny
from tests.english_corpus import write_corpus


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A folder of 12 small documents of English-like text (deterministic)."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def make_config(corpus_dir, tmp_path_factory):
    """``make_config(**overrides)``: a fast tiny-model config training on ``corpus_dir``."""

    def make(workdir, **overrides):
        c = tiny.get_config()
        c.model.name = "tiny"
        c.data.source = str(corpus_dir)
        c.data.dir = str(tmp_path_factory.getbasetemp() / "data")
        c.data.seq_len = 16
        c.data.micro_batch = 8
        c.data.micro_batches = 2
        c.data.val_sequences = 16
        c.train.steps = 6
        c.train.eval_every = 2
        c.train.checkpoint_every = 100  # only the final save (orbax saves cost ~1 s)
        c.train.progress = False
        c.train.count_flops = False  # 3 compiles saved; tests that read FLOPs set it True.
        c.train.workdir = str(workdir)
        c.wandb.mode = "disabled"
        for key, value in overrides.items():
            node = c
            *path, leaf = key.split(".")
            for part in path:
                node = node[part]
            node[leaf] = value
        return c

    return make
