"""The val split as `lmtrain.eval` reports it: its tokens and bytes (val/bpb), and a warning when
its windows run past those a from-scratch model learned.

Both are figures of the whole split, the same on every rank: under DDP and FSDP each rank
validates its own share of the windows (FSDP pads the short ranks with windows of `PAD_TOKEN`),
so counting a rank's own loader gave one rank's tokens and bytes, a bpb off by the share's
tokens per byte, and, under FSDP, an OverflowError decoding the padding (found by a red team).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from transformers import PreTrainedTokenizerBase

from lmtrain.data.windows import FixedWindows
from lmtrain.errors import LMTrainError
from lmtrain.models.export_tokenizer import scratch_windows

log = logging.getLogger(__name__)


def bits_per_byte(
    loss: float, windows: FixedWindows, tokenizer: PreTrainedTokenizerBase
) -> dict[str, float]:
    """val/bpb = loss / ln 2 x tokens / bytes over the tokens the loss was measured on.

    The targets of every val window (`window[1:]`) are those tokens: the windows tile the split
    and share one token, so they are the split's tokens 1 to len x block_size, read from the
    token file whichever rank asks. Decoded together they give the text the model predicted,
    and its UTF-8 length is the byte count. End-of-text tokens decode to nothing: they are
    counted as tokens (the model pays for them) but hold no bytes.
    """
    n_tokens = len(windows) * windows.block_size
    targets = windows.tokens[1 : 1 + n_tokens].tolist()
    n_bytes = len(tokenizer.decode(targets, skip_special_tokens=True).encode("utf-8"))
    if n_bytes == 0:
        raise LMTrainError("the val split decodes to no text: point data.source at some text")
    return {
        "val/bpb": loss / math.log(2) * n_tokens / n_bytes,
        "val/tokens": float(n_tokens),
        "val/bytes": float(n_bytes),
    }


def warn_past_trained_windows(block_size: int, run_config: dict[str, Any], key: str) -> None:
    """Warn when eval's windows (`block_size`) are longer than those the model was trained on
    from scratch (its run's data.block_size), as `lmtrain.generate` does for its text; `key` is
    how the setting is typed (`+data.block_size` for the model's own data config).

    Positions past them never got a gradient (GPT-2 learns one embedding per position): the
    loss there is that of an untrained model, and the metrics mix it in with nothing said. A
    pretrained model (model.pretrained) saw longer text than its fine-tuning windows.
    """
    trained = scratch_windows(run_config)
    if trained is None or block_size <= trained or rank_zero_only.rank > 0:
        return
    log.warning(
        "data.block_size=%d: the val windows run past the %d-token windows this model was "
        "trained on from scratch (its run's data.block_size=%d); it never saw a position past "
        "them, so val/loss, val/ppl and val/bpb score positions it never learned: evaluate with "
        "%s=%d or less",
        block_size,
        trained,
        trained,
        key,
        trained,
    )
