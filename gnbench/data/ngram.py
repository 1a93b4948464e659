"""The easy statistics of a corpus: unigram and bigram cross-entropies of the validation set.

A benchmark target only measures optimization past the easy statistics if the report says where
those sit. A model that has learned token frequencies (a unigram table) or pairs of tokens (a
bigram table) reaches these losses on the same validation windows the trainer evaluates (the
first ``n`` windows of ``T + 1`` tokens of the validation split, each predicting its last ``T``
tokens from the one before), with the tables counted on the training split:

- unigram: ``P(b) = (c(b) + 1) / (N + V)`` (add-one);
- bigram: interpolated absolute discounting (Ney, Essen and Kneser 1994) with ``d = 0.75``,
  ``P(b | a) = max(c(a, b) − d, 0) / c(a·) + d · N₁₊(a·) / c(a·) · P(b)``, where ``c(a·)`` counts
  the pairs starting with ``a`` and ``N₁₊(a·)`` the distinct tokens after it; ``P(b)`` (the
  unigram above) where ``a`` was never seen.

Both are in nats per token, the unit of the validation loss. No fitting to the validation set.

Example:
  >>> import numpy as np
  >>> train = np.array([0, 1, 0, 1, 0, 1, 0], np.int32)
  >>> val_NxT1 = np.array([[0, 1, 0]], np.int32)
  >>> e = ngram_cross_entropies(train, val_NxT1, vocab_size=2)
  >>> round(e["unigram"], 4), round(e["bigram"], 4)  # see tests/data/test_ngram.py
  (0.6994, 0.1337)
"""

from __future__ import annotations

import numpy as np

DISCOUNT = 0.75


def unigram_probabilities(train: np.ndarray, vocab_size: int) -> np.ndarray:
    """``P(b) = (c(b) + 1) / (N + V)`` for every token ``b`` (shape ``(V,)``)."""
    train = np.asarray(train, dtype=np.int64)
    return (np.bincount(train, minlength=vocab_size) + 1.0) / (train.size + vocab_size)


def bigram_probabilities(
    train: np.ndarray,
    prev: np.ndarray,
    nxt: np.ndarray,
    vocab_size: int,
    discount: float = DISCOUNT,
) -> np.ndarray:
    """``P(nxt | prev)`` by interpolated absolute discounting, for each pair given.

    Pairs are counted sparsely (sorted pair codes), so any vocabulary fits in memory.

    Args:
      train: the training split's tokens, in order.
      prev, nxt: the pairs to score (same shape).
      vocab_size: ``V``.
      discount: ``d`` in ``(0, 1)``.

    Returns:
      The probabilities, shaped like ``prev``.
    """
    if not 0 < discount < 1:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    train = np.asarray(train, dtype=np.int64)
    prev = np.asarray(prev, dtype=np.int64)
    nxt = np.asarray(nxt, dtype=np.int64)
    uni = unigram_probabilities(train, vocab_size)
    codes, counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    context = np.bincount(codes // vocab_size, weights=counts, minlength=vocab_size)  # c(a·)
    distinct = np.bincount(codes // vocab_size, minlength=vocab_size)  # N₁₊(a·)
    query = prev * vocab_size + nxt
    pair = np.zeros(query.shape)
    if codes.size:
        at = np.minimum(np.searchsorted(codes, query), codes.size - 1)
        pair = np.where(codes[at] == query, counts[at], 0)
    seen = context[prev] > 0
    safe = np.where(seen, context[prev], 1.0)
    mixed = np.maximum(pair - discount, 0.0) / safe + discount * distinct[prev] / safe * uni[nxt]
    return np.where(seen, mixed, uni[nxt])


def ngram_cross_entropies(
    train: np.ndarray, val_NxT1: np.ndarray, vocab_size: int, discount: float = DISCOUNT
) -> dict[str, float]:
    """Unigram and bigram cross-entropies (nats/token) of validation windows.

    Args:
      train: the training split's tokens, in order.
      val_NxT1: ``N`` validation windows of ``T + 1`` tokens (token ``t`` predicts ``t + 1``).
      vocab_size: ``V``.
      discount: the bigram's absolute discount ``d`` in ``(0, 1)``.

    Returns:
      ``{"unigram": ..., "bigram": ...}``.
    """
    val = np.asarray(val_NxT1, dtype=np.int64)
    if val.ndim != 2 or val.shape[1] < 2:
        raise ValueError(f"val_NxT1 must be (N, T+1) with T >= 1, got shape {val.shape}")
    prev, nxt = val[:, :-1].ravel(), val[:, 1:].ravel()
    uni = unigram_probabilities(train, vocab_size)
    bi = bigram_probabilities(train, prev, nxt, vocab_size, discount)
    return {"unigram": float(-np.mean(np.log(uni[nxt]))), "bigram": float(-np.mean(np.log(bi)))}


__all__ = ["bigram_probabilities", "ngram_cross_entropies", "unigram_probabilities"]
