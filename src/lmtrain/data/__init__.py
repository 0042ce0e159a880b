"""Data: corpus sources, tokenizers, the token cache and the DataModule serving token windows."""

from lmtrain.data.datamodule import TextDataModule

__all__ = ["TextDataModule"]
