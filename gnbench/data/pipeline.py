"""Training and validation batches from a ``TokenFile`` with a grain ``MapDataset``.

Samples are packed: the flat token stream (documents joined by their separators) is cut into
non-overlapping windows of T+1 tokens, sample ``i = tokens[i*(T+1) : (i+1)*(T+1)]`` (inputs are
the first T, targets the last T); the tail shorter than T+1 is unused. Training windows are
shuffled with grain's index shuffle (a permutation per epoch, fixed by the seed and different
for every epoch), repeated forever and grouped into step batches shaped ``(K, b, T+1)`` int32:
step ``j`` holds shuffled windows ``j*K*b ... (j+1)*K*b - 1``, micro-batch-major. A step batch
can straddle two epochs. Reading is random access into the memory map, so any step can be
reached at once: the iterator's state is just the next step index (plus the settings it was
built with, checked on restore).

With ``shard_count`` processes, process ``s`` gets the columns ``s*b/n ... (s+1)*b/n - 1`` of
the b axis of every micro-batch; concatenating the shards along b gives the single-process batch,
so the data order does not depend on the number of processes (and a state restores across them).
"""

from __future__ import annotations

import warnings
from typing import Any

import grain
import numpy as np

from gnbench.data.tokenfile import TokenFile

_READ_OPTIONS = dict(num_threads=1, prefetch_buffer_size=2)


class PackedWindows:
    """Random-access source of non-overlapping windows of ``width`` tokens (as int32).

    Example:
      >>> w = PackedWindows(np.arange(10), width=3)
      >>> len(w), w[1].tolist()
      (3, [3, 4, 5])
    """

    def __init__(self, tokens: np.ndarray, width: int) -> None:
        self.tokens = tokens
        self.width = width

    def __len__(self) -> int:
        return self.tokens.size // self.width

    def __getitem__(self, index: int) -> np.ndarray:
        start = int(index) * self.width
        return np.asarray(self.tokens[start : start + self.width], dtype=np.int32)


def _too_short(what: str, seq_len: int, n_tokens: int, needed: int, unit: str) -> ValueError:
    return ValueError(
        f"seq_len={seq_len} is too long for the {what}: it holds {n_tokens} tokens, i.e. "
        f"{n_tokens // (seq_len + 1)} windows of seq_len+1={seq_len + 1} tokens, but {unit} "
        f"needs {needed}; use a shorter seq_len, a smaller batch or a larger corpus"
    )


def steps_per_epoch(
    token_file: TokenFile, *, seq_len: int, micro_batch: int, micro_batches: int
) -> int:
    """Number of whole step batches (K*b windows of T+1 tokens) in one pass over the train split.

    Example:
      >>> steps_per_epoch(tf, seq_len=64, micro_batch=16, micro_batches=8)  # doctest: +SKIP
      488
    """
    if seq_len < 1 or micro_batch < 1 or micro_batches < 1:
        raise ValueError(
            f"seq_len, micro_batch and micro_batches must be positive, got "
            f"{seq_len}, {micro_batch}, {micro_batches}"
        )
    return len(PackedWindows(token_file.train, seq_len + 1)) // (micro_batch * micro_batches)


class TrainIterator:
    """Endless iterator of step batches ``(K, b/shard_count, T+1)`` int32 with checkpointable
    state (``get_state()`` is a JSON-able dict; ``set_state`` resumes exactly there).

    Example:
      >>> it = train_iterator(tf, seq_len=64, micro_batch=16,  # doctest: +SKIP
      ...     micro_batches=8, seed=0)
      >>> batch = next(it); state = it.get_state()                          # doctest: +SKIP
    """

    def __init__(self, dataset: grain.MapDataset, settings: dict[str, int]) -> None:
        self._settings = settings
        read = grain.ReadOptions(**_READ_OPTIONS)
        self._iter = iter(dataset.to_iter_dataset(read_options=read))

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        """The position (next step index) and the settings the iterator was built with."""
        return {"step": int(self._iter.get_state()["next_index"]), **self._settings}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from ``state`` (from ``get_state``, maybe with another shard layout)."""
        bad = {k: (state.get(k), v) for k, v in self._settings.items() if state.get(k) != v}
        if bad:
            details = ", ".join(f"{k}: saved {a} vs now {b}" for k, (a, b) in bad.items())
            raise ValueError(f"data iterator state does not match this pipeline ({details})")
        self._iter.set_state({"next_index": int(state["step"])})


def train_iterator(
    token_file: TokenFile,
    *,
    seq_len: int,
    micro_batch: int,
    micro_batches: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> TrainIterator:
    """Shuffled, endlessly repeated step batches of this process's shard of the train split.

    Example:
      >>> it = train_iterator(tf, seq_len=64, micro_batch=16,  # doctest: +SKIP
      ...     micro_batches=8, seed=0)
      >>> next(it).shape                                                    # doctest: +SKIP
      (8, 16, 65)
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    if micro_batch % shard_count:
        raise ValueError(f"micro_batch={micro_batch} is not divisible by shard_count={shard_count}")
    n_steps = steps_per_epoch(
        token_file, seq_len=seq_len, micro_batch=micro_batch, micro_batches=micro_batches
    )
    if n_steps < 1:
        raise _too_short(
            "train split",
            seq_len,
            token_file.train.size,
            micro_batch * micro_batches,
            f"one step batch (K={micro_batches} x b={micro_batch} windows)",
        )
    local_b = micro_batch // shard_count
    shuffle_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    ds = grain.MapDataset.source(PackedWindows(token_file.train, seq_len + 1))
    ds = ds.shuffle(seed=shuffle_seed).repeat()
    ds = ds.batch(local_b, drop_remainder=True)[shard_index::shard_count]
    ds = ds.batch(micro_batches, drop_remainder=True)
    settings = dict(
        seed=int(seed),
        seq_len=seq_len,
        micro_batch=micro_batch,
        micro_batches=micro_batches,
        n_train_tokens=int(token_file.train.size),
    )
    return TrainIterator(ds, settings)


def validation_batches(
    token_file: TokenFile,
    *,
    seq_len: int,
    n_sequences: int,
    batch: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> np.ndarray:
    """The first ``n_sequences`` windows of the validation split, in order, shaped
    ``(n_batches, batch/shard_count, T+1)`` int32 (this process's columns of the batch axis).

    ``n_sequences`` is rounded down to a multiple of ``batch``, and lowered (with a warning) to
    what the split holds; fewer than ``batch`` windows is an error.

    Example:
      >>> validation_batches(tf, seq_len=64, n_sequences=64, batch=16).shape  # doctest: +SKIP
      (4, 16, 65)
    """
    if batch < 1 or n_sequences < batch:
        raise ValueError(f"n_sequences={n_sequences} must be at least batch={batch} >= 1")
    if batch % shard_count or not 0 <= shard_index < shard_count:
        raise ValueError(
            f"batch={batch} must be divisible by shard_count={shard_count} and "
            f"0 <= shard_index={shard_index} < shard_count"
        )
    if token_file.val.size == 0:
        raise ValueError(
            f"{token_file.directory} has no validation split (prepared with val_fraction=0); "
            "prepare it again with a positive --val-fraction"
        )
    windows = PackedWindows(token_file.val, seq_len + 1)
    if len(windows) < batch:
        raise _too_short(
            "validation split",
            seq_len,
            token_file.val.size,
            batch,
            f"one validation batch (batch={batch} windows)",
        )
    n = min(n_sequences, len(windows)) // batch * batch
    if n < n_sequences:
        warnings.warn(
            f"using {n} validation sequences instead of n_sequences={n_sequences} (the validation "
            f"split holds {len(windows)} windows of {seq_len + 1} tokens; batch={batch})",
            stacklevel=2,
        )
    flat = np.asarray(token_file.val[: n * (seq_len + 1)], dtype=np.int32)
    out = flat.reshape(n // batch, batch, seq_len + 1)
    local = batch // shard_count
    return np.ascontiguousarray(out[:, shard_index * local : (shard_index + 1) * local])
