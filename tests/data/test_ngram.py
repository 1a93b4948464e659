"""The n-gram baselines of the report, against hand-worked numbers and normalization."""

import math

import numpy as np
import pytest

from gnbench.data.ngram import bigram_probabilities, ngram_cross_entropies, unigram_probabilities


def test_cross_entropies_on_an_alternating_corpus_by_hand():
    train = np.array([0, 1, 0, 1, 0, 1, 0])  # c(0) = 4, c(1) = 3; pairs (0,1) x3, (1,0) x3.
    e = ngram_cross_entropies(train, np.array([[0, 1, 0]]), vocab_size=2)
    p0, p1 = 5 / 9, 4 / 9  # add-one
    assert e["unigram"] == pytest.approx(-(math.log(p1) + math.log(p0)) / 2)
    # P(1 | 0) = (3 - 0.75) / 3 + 0.75 * 1 / 3 * P(1); P(0 | 1) likewise.
    p1_0, p0_1 = 2.25 / 3 + 0.25 * p1, 2.25 / 3 + 0.25 * p0
    assert e["bigram"] == pytest.approx(-(math.log(p1_0) + math.log(p0_1)) / 2)


def test_bigram_rows_are_distributions_and_unseen_contexts_back_off():
    rng = np.random.default_rng(0)
    vocab = 7
    train = rng.integers(0, 5, size=500)  # Tokens 5 and 6 never occur.
    prev, nxt = np.meshgrid(np.arange(vocab), np.arange(vocab), indexing="ij")
    table = bigram_probabilities(train, prev, nxt, vocab)
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(table[6], unigram_probabilities(train, vocab))  # unseen context
    assert (table > 0).all()
    # Counting pairs sparsely gives the dense count's answer.
    dense = np.zeros((vocab, vocab))
    np.add.at(dense, (train[:-1], train[1:]), 1)
    a, b = 2, 3
    expected = (
        max(dense[a, b] - 0.75, 0) / dense[a].sum()
        + 0.75 * (dense[a] > 0).sum() / dense[a].sum() * unigram_probabilities(train, vocab)[b]
    )
    assert table[a, b] == pytest.approx(expected)


def test_a_bigram_source_is_learned_below_its_unigram_entropy():
    # A Markov chain whose next token is (prev + 1) mod 4 nine times in ten: the bigram table
    # predicts far better than token frequencies (uniform here: ln 4).
    rng = np.random.default_rng(1)
    seq = [0]
    for _ in range(20_000):
        seq.append((seq[-1] + 1) % 4 if rng.random() < 0.9 else int(rng.integers(0, 4)))
    seq = np.array(seq)
    val = seq[15_000 : 15_000 + 21 * 200].reshape(200, 21)
    e = ngram_cross_entropies(seq[:15_000], val, vocab_size=4)
    assert e["unigram"] == pytest.approx(math.log(4), abs=0.01)
    # The chain's conditional entropy: 0.925 on the successor, 0.025 on each of the other three.
    h = -(0.925 * math.log(0.925) + 3 * 0.025 * math.log(0.025))
    assert e["bigram"] == pytest.approx(h, abs=0.03)
    with pytest.raises(ValueError, match="val_NxT1 must be"):
        ngram_cross_entropies(seq, seq[:5], vocab_size=4)
