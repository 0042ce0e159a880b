"""The LightningModule and what builds Hugging Face models from config."""

from lmtrain.models.module import CausalLMModule

__all__ = ["CausalLMModule"]
