"""A small real-text corpus and a fast config for trainer tests."""

import pytest

from experiments import tiny

WORDS = (
    "the king shall speak to his people and the queen shall answer him with grace while "
    "the fool laughs at them all in the hall of the castle by the sea"
).split()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A folder of 12 small documents of English-like text (deterministic)."""
    folder = tmp_path_factory.mktemp("corpus")
    for d in range(12):
        lines = []
        for i in range(60):
            start = (d * 7 + i * 3) % len(WORDS)
            lines.append(" ".join(WORDS[start:] + WORDS[:start])[: 40 + (i * 11) % 50] + ".")
        (folder / f"doc{d:02d}.txt").write_text("\n".join(lines) + "\n")
    return folder


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
