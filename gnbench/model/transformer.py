"""LLaMA-style decoder of Abreu et al. (2025): pre-norm RMSNorm, LayerNorm on queries and keys,
RoPE, a two-matrix GELU MLP, no biases, untied embedding and head.

Shape suffixes: B batch, L sequence, D d_model, H heads, K head_dim, F d_ff, V vocab.
Parameters are float32; ``ModelConfig.dtype="bfloat16"`` runs the matmuls in bfloat16 and
returns float32 logits.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnbench.model.configs import ModelConfig


def rope(x_BxLxHxK: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding on the last axis (pairs (i, i + K/2), as in LLaMA/NeoX)."""
    _, length, _, k = x_BxLxHxK.shape
    half = k // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_LxK2 = jnp.arange(length, dtype=jnp.float32)[:, None] * freq[None, :]
    cos = jnp.cos(angle_LxK2)[None, :, None, :]
    sin = jnp.sin(angle_LxK2)[None, :, None, :]
    x1, x2 = x_BxLxHxK[..., :half].astype(jnp.float32), x_BxLxHxK[..., half:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxLxHxK.dtype)


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        b, length, d = x_BxLxD.shape
        dense = lambda name: nn.Dense(d, use_bias=False, dtype=cfg.dtype, name=name)  # noqa: E731
        split = lambda t: t.reshape(b, length, cfg.n_heads, cfg.head_dim)  # noqa: E731
        q = split(dense("q")(x_BxLxD))
        k = split(dense("k")(x_BxLxD))
        v = split(dense("v")(x_BxLxD))
        q = nn.LayerNorm(use_bias=False, dtype=cfg.dtype, name="q_norm")(q)
        k = nn.LayerNorm(use_bias=False, dtype=cfg.dtype, name="k_norm")(k)
        q, k = rope(q, cfg.rope_theta), rope(k, cfg.rope_theta)
        logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q, k).astype(jnp.float32)
        logits_BxHxLxL = logits_BxHxLxL / jnp.sqrt(cfg.head_dim).astype(jnp.float32)
        causal_LxL = jnp.tril(jnp.ones((length, length), dtype=bool))
        logits_BxHxLxL = jnp.where(causal_LxL, logits_BxHxLxL, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(v.dtype)
        out_BxLxHxK = jnp.einsum("bhqs,bshk->bqhk", probs, v)
        return dense("o")(out_BxLxHxK.reshape(b, length, d))


class Block(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        h = nn.RMSNorm(dtype=cfg.dtype, name="attn_norm")(x_BxLxD)
        x_BxLxD = x_BxLxD + Attention(cfg, name="attn")(h)
        h = nn.RMSNorm(dtype=cfg.dtype, name="mlp_norm")(x_BxLxD)
        h_BxLxF = nn.Dense(cfg.d_ff, use_bias=False, dtype=cfg.dtype, name="up")(h)
        h_BxLxF = nn.gelu(h_BxLxF)
        return x_BxLxD + nn.Dense(cfg.d_model, use_bias=False, dtype=cfg.dtype, name="down")(
            h_BxLxF
        )


class Transformer(nn.Module):
    """Decoder-only LM. Parameter names (used by Muon routing and layerwise GN blocks):
    ``embed``, ``block_0`` ... ``block_{n-1}``, ``final_norm``, ``head``."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
        cfg = self.cfg
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            name="embed",
            embedding_init=nn.initializers.normal(stddev=0.02),
        )
        x_BxLxD = embed(tokens_BxL).astype(cfg.dtype)
        for i in range(cfg.n_layers):
            x_BxLxD = Block(cfg, name=f"block_{i}")(x_BxLxD)
        x_BxLxD = nn.RMSNorm(dtype=cfg.dtype, name="final_norm")(x_BxLxD)
        logits_BxLxV = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, name="head")(
            x_BxLxD
        )
        return logits_BxLxV.astype(jnp.float32)


def init_params(cfg: ModelConfig, rng: jax.Array) -> Any:
    """Float32 parameters of ``Transformer(cfg)`` (use under ``jax.eval_shape`` for shapes only)."""
    tokens_1x1 = jnp.zeros((1, 1), jnp.int32)
    return Transformer(cfg).init(rng, tokens_1x1)["params"]


def apply(cfg: ModelConfig, params: Any, tokens_BxL: jax.Array) -> jax.Array:
    """``logits_BxLxV = apply(cfg, params, tokens_BxL)``, a pure function of params and tokens.

    Example:
      >>> from gnbench.model import get_model_config
      >>> cfg = get_model_config("tiny")
      >>> params = init_params(cfg, jax.random.key(0))
      >>> apply(cfg, params, jnp.zeros((2, 8), jnp.int32)).shape
      (2, 8, 256)
    """
    return Transformer(cfg).apply({"params": params}, tokens_BxL)


def stages(cfg: ModelConfig) -> tuple[tuple[str, Any], ...]:
    """``Transformer(cfg)`` as a chain of stages, one per layerwise-GN block (same numerics).

    ``("embed", f)``, ``("block_0", f)``, ..., ``("head", f)`` with ``f(params, h) -> h'``;
    the first stage takes the tokens, the last returns the float32 logits, the final norm runs
    in the last block's stage (as :func:`gnbench.optim.gn.layerwise.transformer_blocks` groups
    it). A stage reads only its own entries of ``params``. Composed, they are :func:`apply`.

    Example:
      >>> from gnbench.model import get_model_config
      >>> cfg = get_model_config("tiny", n_layers=2)
      >>> [name for name, _ in stages(cfg)]
      ['embed', 'block_0', 'block_1', 'head']
    """

    def embed(params: Any, tokens_BxL: jax.Array) -> jax.Array:
        module = nn.Embed(cfg.vocab_size, cfg.d_model)
        return module.apply({"params": params["embed"]}, tokens_BxL).astype(cfg.dtype)

    def final_norm(params: Any, x_BxLxD: jax.Array) -> jax.Array:
        return nn.RMSNorm(dtype=cfg.dtype).apply({"params": params["final_norm"]}, x_BxLxD)

    def block(i: int) -> Any:
        def run(params: Any, x_BxLxD: jax.Array) -> jax.Array:
            x_BxLxD = Block(cfg).apply({"params": params[f"block_{i}"]}, x_BxLxD)
            return final_norm(params, x_BxLxD) if i == cfg.n_layers - 1 else x_BxLxD

        return run

    def head(params: Any, x_BxLxD: jax.Array) -> jax.Array:
        dense = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype)
        return dense.apply({"params": params["head"]}, x_BxLxD).astype(jnp.float32)

    layers = tuple((f"block_{i}", block(i)) for i in range(cfg.n_layers))
    if not layers:  # No block for the final norm to join: it is a block of its own.
        layers = (("final_norm", final_norm),)
    return (("embed", embed), *layers, ("head", head))
