"""Data: corpus sources, tokenizers, the token cache and the DataModule serving token windows.

`TextDataModule` is imported on first use: the tokenizer worker processes import this package too,
and should not pay for torch and Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmtrain.data.datamodule import TextDataModule

__all__ = ["TextDataModule"]


def __getattr__(name: str) -> Any:
    if name == "TextDataModule":
        from lmtrain.data.datamodule import TextDataModule

        return TextDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
