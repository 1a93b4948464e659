"""Named model sizes. ``45m`` and ``150m`` are the paper's (Abreu et al. 2025, arXiv 2510.09378)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Transformer hyperparameters.

    Attributes:
      d_model: residual width d.
      n_layers: transformer blocks.
      n_heads: attention heads (d_model must divide evenly).
      d_ff: MLP hidden width (4d in the paper).
      vocab_size: tokenizer vocabulary V (set from the token file when training).
      max_len: longest sequence RoPE is used at (informational; RoPE has no table).
      rope_theta: RoPE base (10^4 in the paper).
      dtype: compute dtype, ``float32`` (paper) or ``bfloat16``; parameters stay float32.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    vocab_size: int
    max_len: int
    rope_theta: float = 10_000.0
    dtype: str = "float32"

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype={self.dtype!r}; valid: 'float32', 'bfloat16'")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


CONFIGS: dict[str, ModelConfig] = {
    # About 1M parameters with a byte vocabulary: the CPU default.
    "tiny": ModelConfig(d_model=128, n_layers=4, n_heads=4, d_ff=512, vocab_size=256, max_len=128),
    "small": ModelConfig(
        d_model=256, n_layers=4, n_heads=8, d_ff=1024, vocab_size=256, max_len=256
    ),
    "45m": ModelConfig(
        d_model=512, n_layers=4, n_heads=8, d_ff=2048, vocab_size=32000, max_len=1024
    ),
    "150m": ModelConfig(
        d_model=768, n_layers=12, n_heads=16, d_ff=3072, vocab_size=32000, max_len=1024
    ),
}


def get_model_config(name: str, **overrides) -> ModelConfig:
    """The named config with ``overrides`` (e.g. ``vocab_size``) applied.

    Example:
      >>> get_model_config("45m").d_model
      512
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name], **overrides)
