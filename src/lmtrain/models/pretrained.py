"""Pretrained weights read from a folder or hub id that nobody vouches for, by every tool.

`model.pretrained` (training, and the base of LoRA checkpoints) and the folders eval, generate and
export read all go through `load_weights`: transformers' `from_pretrained` with the folder's own
code refused (`trust_remote_code=False`, so no `[y/N]` prompt on stdin either), a pickled .bin
read weights-only, and every weight checked to fit config.json, since transformers only logs a
weight it left random (missing) or dropped (unexpected). Whatever goes wrong is one line naming
the setting (`loading_error`), never torch's advice to turn weights-only loading off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from lmtrain.errors import LMTrainError, first_line
from lmtrain.models.causal import DECODER_MODEL, no_causal_lm
from lmtrain.utils.safe_load import pickle_refusal

# What transformers' errors about the attention implementation say (5.x): "Specified
# `attn_implementation=...` is not supported", "does not support an attention implementation
# through torch's flex_attention", "FlashAttention2 has been toggled on, but ...".
ATTENTION_WORDS = ("attn_implementation", "attention implementation", "FlashAttention")
# For a from_pretrained call of ours: a folder's own code (config.json's auto_map) is refused,
# never run, and transformers does not ask on stdin whether to run it.
NO_REMOTE_CODE = {"trust_remote_code": False}
# What to pass instead of weights pickled with more than tensors (a .bin whose code would run).
SAFE_WEIGHTS = (
    "pass weights saved as model.safetensors (save_pretrained's default), from a source you trust"
)
# Buffers that older transformers saved with the weights and 5.x no longer has, which 5.x reports
# as unexpected: GPT-2's `attn.masked_bias` (a constant -1e4, in checkpoints saved by 2.9 to 4.2x).
# Its `attn.bias` mask and Llama's rotary `inv_freq` 5.x skips itself.
LEGACY_BUFFERS = (".attn.masked_bias",)
# The logger transformers (5.x) writes its LOAD REPORT of weights that do not fit to.
LOAD_REPORT_LOGGER = "transformers.modeling_utils"


def load_weights(
    source: str | Path, subject: str, advice: str, damaged: str, **kwargs: Any
) -> PreTrainedModel:
    """`from_pretrained(source)` of an untrusted folder or hub id, for every tool: no code from it
    runs (custom code is refused, not prompted for) and every weight must fit config.json
    (transformers only logs a missing one, left random, or an unexpected one, dropped). A
    failure is one line: `subject` (the setting), what is wrong, then `advice` (what to pass
    instead) or `damaged` (for files that cannot be read or do not fit together)."""
    try:
        with load_report_held_back():
            model, info = AutoModelForCausalLM.from_pretrained(
                str(source),
                trust_remote_code=False,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # listed in `info` (refused below), not raised
                **kwargs,
            )
    except Exception as err:
        failure = loading_error(subject, source, err, advice, damaged)
        if failure is None:
            raise
        raise failure from None
    unfit = {
        "missing": info["missing_keys"],
        "unexpected": [key for key in info["unexpected_keys"] if not key.endswith(LEGACY_BUFFERS)],
        "of other shapes": [key for key, *_shapes in info["mismatched_keys"]],
    }
    if any(unfit.values()):
        found = "; ".join(f"{kind}: {listed(keys)}" for kind, keys in unfit.items() if keys)
        raise LMTrainError(
            f"{subject} has weights that do not fit its config.json ({found}): {damaged}"
        )
    return model


@contextmanager
def load_report_held_back() -> Iterator[None]:
    """Hold back transformers' LOAD REPORT, a table of every weight that does not fit (60 lines
    for a 2-layer model) logged before `load_weights` refuses the folder in one line."""
    logger = logging.getLogger(LOAD_REPORT_LOGGER)

    def keep(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def loading_error(
    subject: str, source: str | Path, err: BaseException, advice: str, damaged: str
) -> LMTrainError | None:
    """`load_weights`' line for from_pretrained's `err`; None when the folder is not the cause
    (a bad model.attn_implementation, a missing package, a bug). Of torch's refusal of a pickle,
    one long line of advice to turn weights-only loading off (running its code), the refused
    global alone is kept."""
    if isinstance(err, LMTrainError):
        return err
    refusal = pickle_refusal(err)
    if refusal is not None:
        return LMTrainError(
            f"{subject} holds pickled objects that are not weights ({refusal}) and was not "
            f"loaded, as loading them could run code: {SAFE_WEIGHTS}"
        )
    if isinstance(err, SafetensorError):  # neither an OSError nor a ValueError
        names = ", ".join(sorted(p.name for p in Path(source).glob("*.safetensors")))
        return LMTrainError(
            f"{subject} has unreadable weights ({names or 'safetensors'}: {first_line(err)}; cut "
            f"short?): {damaged}"
        )
    if isinstance(err, ValueError) and "trust_remote_code" in str(err):
        return LMTrainError(
            f"{subject} needs the custom code it holds (config.json's auto_map), which lmtrain "
            "never runs: pass a model of an architecture transformers has built in"
        )
    about_attention = any(word in str(err) for word in ATTENTION_WORDS)
    if isinstance(err, ValueError) and (other_kind := not_causal(subject, source)) is not None:
        return other_kind  # t5: "Unrecognized configuration class ..." for AutoModelForCausalLM
    if isinstance(err, OSError | ValueError) and moved_folder(source):
        return LMTrainError(
            f"{subject} could not be loaded (the folder {str(source)!r} does not exist): {advice}"
        )
    if isinstance(err, OSError | ValueError | RuntimeError) and not about_attention:
        # RuntimeError: a cut-short .bin (torch's zip reader); ValueError: no model_type, ...
        return LMTrainError(f"{subject} could not be loaded ({first_line(err)}): {advice}")
    return None


def moved_folder(source: str | Path) -> bool:
    """Whether `source` is a local path (/..., ./..., ~/..., more than one /, or `models/x`
    where `models` is a folder here: a hub id is <org>/<name>) where no folder is: the hub's
    words for it (a repo id's form) say nothing."""
    text = str(source)
    in_folder = "/" in text and Path(text).parent.is_dir()
    local = text.startswith(("/", ".", "~")) or text.count("/") > 1 or in_folder
    return local and not Path(text).expanduser().exists()


def not_causal(subject: str, source: str | Path) -> LMTrainError | None:
    """The refusal of `source` as a model type with no causal LM in transformers (an encoder or
    encoder-decoder model), as model.model_type=t5 is refused; None where its config.json does
    not load or is a causal LM's (another cause: the general line stands)."""
    try:
        config = AutoConfig.from_pretrained(str(source), **NO_REMOTE_CODE)
    except Exception:  # a damaged or unknown config.json: named by the general line
        return None
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return None
    return no_causal_lm(f"{subject} (model_type {config.model_type!r})", DECODER_MODEL)


def listed(names: Iterable[str], shown: int = 3) -> str:
    """The first `shown` of `names` in order, and how many more: a model has hundreds."""
    ordered = sorted(names)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return (", ".join(ordered[:shown]) or "none") + more
