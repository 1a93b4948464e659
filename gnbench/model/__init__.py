"""The paper's LLaMA-style transformer LM as a pure ``apply(params, tokens) -> logits``."""

from gnbench.model.configs import CONFIGS, ModelConfig, get_model_config
from gnbench.model.transformer import Transformer, apply, init_params

__all__ = ["CONFIGS", "ModelConfig", "Transformer", "apply", "get_model_config", "init_params"]
