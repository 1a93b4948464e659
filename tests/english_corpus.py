"""A small deterministic English-like corpus shared by the trainer, sweep and launch tests."""

from pathlib import Path

WORDS = (
    "the king shall speak to his people and the queen shall answer him with grace while "
    "the fool laughs at them all in the hall of the castle by the sea"
).split()


def write_corpus(folder: Path, docs: int = 12, lines: int = 60) -> Path:
    """Writes ``docs`` text files of ``lines`` sentences each into ``folder``; returns it."""
    for d in range(docs):
        text = []
        for i in range(lines):
            start = (d * 7 + i * 3) % len(WORDS)
            text.append(" ".join(WORDS[start:] + WORDS[:start])[: 40 + (i * 11) % 50] + ".")
        (folder / f"doc{d:02d}.txt").write_text("\n".join(text) + "\n")
    return folder
