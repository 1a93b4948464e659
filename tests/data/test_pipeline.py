"""The grain pipeline: packing, shuffling, determinism, checkpoints, shards, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gnbench.data import TokenFile, steps_per_epoch, train_iterator, validation_batches
from tests.data.helpers import write_token_dir

T, B, K = 7, 4, 3  # windows of 8 tokens; 10,000 train tokens -> 1250 windows, 104 steps/epoch


def take(it, n):
    return [next(it) for _ in range(n)]


def make(tf, seed=0, **kw):
    return train_iterator(tf, seq_len=T, micro_batch=B, micro_batches=K, seed=seed, **kw)


def test_batches_are_packed_windows_of_the_flat_stream(arange_dir):
    tf = TokenFile.open(arange_dir)
    batch = next(make(tf))
    assert batch.shape == (K, B, T + 1) and batch.dtype == np.int32
    for row in batch.reshape(-1, T + 1):
        w = int(row[0]) // (T + 1)
        assert int(row[0]) % (T + 1) == 0
        assert np.array_equal(row, np.asarray(tf.train[w * (T + 1) : (w + 1) * (T + 1)]))


def test_each_epoch_is_a_fresh_permutation(arange_dir):
    tf = TokenFile.open(arange_dir)
    n_windows = tf.train.size // (T + 1)
    steps = steps_per_epoch(tf, seq_len=T, micro_batch=B, micro_batches=K)
    assert steps == n_windows // (B * K) == 104
    # 1250 windows = 104 steps of 12 plus 2: read 2 epochs' worth of windows exactly
    rows = np.concatenate([b.reshape(-1, T + 1) for b in take(make(tf), 209)])[: 2 * n_windows]
    firsts = rows[:, 0] // (T + 1)
    e1, e2 = firsts[:n_windows], firsts[n_windows:]
    assert sorted(e1) == sorted(e2) == list(range(n_windows))
    assert not np.array_equal(e1, e2)
    assert not np.array_equal(e1, np.arange(n_windows))  # shuffled


def test_same_seed_same_batches_different_seed_different(arange_dir):
    tf = TokenFile.open(arange_dir)
    a, b, c = take(make(tf, 0), 3), take(make(tf, 0), 3), take(make(tf, 1), 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_restored_iterator_continues_exactly(arange_dir):
    tf = TokenFile.open(arange_dir)
    it = make(tf, seed=5)
    take(it, 4)
    state = json.loads(json.dumps(it.get_state()))
    assert state["step"] == 4
    expected = take(it, 3)
    fresh = make(tf, seed=5)
    fresh.set_state(state)
    assert all(np.array_equal(x, y) for x, y in zip(expected, take(fresh, 3), strict=True))
    with pytest.raises(ValueError, match="seed: saved 5 vs now 6"):
        make(tf, seed=6).set_state(state)


def test_shards_concatenate_to_the_global_batch(arange_dir):
    tf = TokenFile.open(arange_dir)
    full = take(make(tf), 3)
    for n in (2, 4):
        shards = [take(make(tf, shard_index=s, shard_count=n), 3) for s in range(n)]
        for j in range(3):
            assert shards[0][j].shape == (K, B // n, T + 1)
            assert np.array_equal(np.concatenate([s[j] for s in shards], axis=1), full[j])
    # a state saved with one process restores on two
    single = make(tf)
    take(single, 2)
    halves = []
    for s in range(2):
        it = make(tf, shard_index=s, shard_count=2)
        it.set_state(single.get_state())
        halves.append(next(it))
    assert np.array_equal(np.concatenate(halves, axis=1), next(single))
    with pytest.raises(ValueError, match="not divisible"):
        make(tf, shard_count=3)


def test_seq_len_too_long(arange_dir):
    tf = TokenFile.open(arange_dir)
    with pytest.raises(ValueError, match="seq_len=5000 .* 10000 tokens"):
        train_iterator(tf, seq_len=5000, micro_batch=2, micro_batches=1, seed=0)
    with pytest.raises(ValueError, match="seq_len=20000 .* 10000 tokens"):
        train_iterator(tf, seq_len=20000, micro_batch=1, micro_batches=1, seed=0)
    with pytest.raises(ValueError, match="seq_len=300 .* 1000 tokens"):
        validation_batches(tf, seq_len=300, n_sequences=4, batch=4)


def test_validation_batches_are_the_first_windows(arange_dir):
    tf = TokenFile.open(arange_dir)
    val = validation_batches(tf, seq_len=T, n_sequences=16, batch=B)
    assert val.shape == (4, B, T + 1) and val.dtype == np.int32
    assert np.array_equal(val.reshape(-1), np.arange(10_000, 10_000 + 16 * (T + 1)))
    half = validation_batches(tf, seq_len=T, n_sequences=16, batch=B, shard_index=1, shard_count=2)
    assert np.array_equal(half, val[:, 2:])
    with pytest.warns(UserWarning, match="using 124 validation sequences"):
        clipped = validation_batches(tf, seq_len=T, n_sequences=1000, batch=B)
    assert clipped.shape == (31, B, T + 1)


def test_no_validation_split_is_a_clear_error(tmp_path):
    tf = TokenFile.open(write_token_dir(tmp_path / "noval", np.arange(100), np.arange(0), 256))
    with pytest.raises(ValueError, match="no validation split"):
        validation_batches(tf, seq_len=T, n_sequences=4, batch=4)
