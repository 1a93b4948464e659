"""The paper's transformer: parameter counts, causality, RoPE, dtypes, configs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnbench.model import apply, get_model_config, init_params
from gnbench.model.transformer import rope


def expected_param_count(d, n_layers, d_ff, vocab, head_dim):
    per_block = 4 * d * d + 2 * d * d_ff + 2 * d + 2 * head_dim  # qkvo, mlp, 2 rms, q/k norm
    return 2 * vocab * d + n_layers * per_block + d  # embed + head, blocks, final norm


@pytest.mark.parametrize("name, millions", [("45m", 45.4), ("150m", 134.1)])
def test_param_counts_match_architecture_arithmetic(name, millions):
    cfg = get_model_config(name)
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert cfg.vocab_size == 32000
    assert count == expected_param_count(cfg.d_model, cfg.n_layers, cfg.d_ff, 32000, cfg.head_dim)
    assert abs(count / 1e6 - millions) < 0.1


def test_tiny_is_about_one_million_parameters():
    cfg = get_model_config("tiny")
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    assert 0.5e6 < sum(x.size for x in jax.tree.leaves(shapes)) < 1.5e6


def test_no_biases_and_untied_head():
    cfg = get_model_config("tiny")
    params = init_params(cfg, jax.random.key(0))
    names = [
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    assert not [n for n in names if "bias" in n]
    assert params["embed"]["embedding"].shape == (cfg.vocab_size, cfg.d_model)
    assert params["head"]["kernel"].shape == (cfg.d_model, cfg.vocab_size)


def test_causality_by_gradients():
    """d logits[t] / d input[s] is zero for s > t and nonzero for s <= t.

    Each position gets its own row of an enlarged embedding table, so the gradient with respect to
    that row is the gradient with respect to the position's input vector.
    """
    cfg = get_model_config("tiny", n_layers=2)
    length = 12
    params = init_params(cfg, jax.random.key(1))
    wide = dataclasses.replace(cfg, vocab_size=cfg.vocab_size + length)
    positional_tokens = cfg.vocab_size + jnp.arange(length)[None]
    rows_LxD = jax.random.normal(jax.random.key(2), (length, cfg.d_model)) * 0.02
    head = jnp.pad(params["head"]["kernel"], ((0, 0), (0, length)))

    def logits_sum_at(rows, t):
        table = jnp.concatenate([params["embed"]["embedding"], rows], axis=0)
        p = params | {"embed": {"embedding": table}, "head": {"kernel": head}}
        return apply(wide, p, positional_tokens)[0, t].sum()

    for t in (0, 5, 11):
        influence_L = jnp.abs(jax.grad(logits_sum_at)(rows_LxD, t)).sum(-1)
        assert jnp.all(influence_L[t + 1 :] == 0), f"position {t} sees the future"
        assert jnp.all(influence_L[: t + 1] > 0), f"position {t} ignores its past"


def test_rope_matches_rotation_matrices():
    rng = np.random.default_rng(0)
    length, heads, k, theta = 7, 2, 8, 10_000.0
    x = rng.normal(size=(1, length, heads, k)).astype(np.float32)
    got = np.asarray(rope(jnp.asarray(x), theta))
    half = k // 2
    for m in range(length):
        rot = np.zeros((k, k))
        for i in range(half):
            angle = m * theta ** (-i / half)
            c, s = np.cos(angle), np.sin(angle)
            rot[i, i], rot[i, i + half] = c, -s
            rot[i + half, i], rot[i + half, i + half] = s, c
        np.testing.assert_allclose(got[0, m], x[0, m] @ rot.T, rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q = np.repeat(rng.normal(size=(1, 1, 1, 8)), 10, axis=1).astype(np.float32)
    k = np.repeat(rng.normal(size=(1, 1, 1, 8)), 10, axis=1).astype(np.float32)
    rq, rk = np.asarray(rope(jnp.asarray(q), 1e4)), np.asarray(rope(jnp.asarray(k), 1e4))
    score = lambda m, n: float(rq[0, m, 0] @ rk[0, n, 0])  # noqa: E731
    assert score(5, 2) == pytest.approx(score(8, 5), rel=1e-4)
    assert score(3, 3) == pytest.approx(score(9, 9), rel=1e-4)


def test_bfloat16_compute_is_close_to_float32_and_keeps_float32_params():
    cfg32 = get_model_config("tiny")
    cfg16 = get_model_config("tiny", dtype="bfloat16")
    params = init_params(cfg16, jax.random.key(0))
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 256)
    l32, l16 = apply(cfg32, params, tokens), apply(cfg16, params, tokens)
    assert l16.dtype == jnp.float32
    assert float(jnp.abs(l32 - l16).max()) < 0.1 * float(jnp.abs(l32).max())


def test_unknown_model_and_bad_dtype_fail_with_choices():
    with pytest.raises(ValueError, match=r"unknown model 'huge'.*tiny, small, 45m, 150m"):
        get_model_config("huge")
    with pytest.raises(ValueError, match="valid: 'float32', 'bfloat16'"):
        get_model_config("tiny", dtype="float16")
