"""The tokens of an export's plain use: its tokenizer, called plainly, encodes text as training
did, and a plain `model.generate` makes no more tokens than the model can go on for
(`length_settings`).

lmtrain encodes the corpus and every prompt without the tokens a tokenizer's post-processor adds
(`add_special_tokens=False`: `lmtrain.data.encode`, `lmtrain.models.generation.AS_TEXT`), so a
window starts wherever the text falls, never at a `<s>`. A pretrained tokenizer that adds one
(Llama's TemplateProcessing `<s> $A`) kept adding it in the export: a plain `tokenizer(prompt)`
put a token before every prompt that the fine-tuned model never saw there, and plain greedy text
differed from `lmtrain.generate greedy=true` (found by a red team). The export saves its
tokenizer with a post-processor that adds nothing; the special tokens stay in the vocabulary.
It also reads a special token's spelling in a text as characters, as training did, unless a char
vocabulary cannot spell the end-of-text token (`split_special_text`).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.models.tokenizer_digest import tokenizer_digest

log = logging.getLogger(__name__)

# export.yaml's generation.max_new_tokens: a max_length given beside it replaces it.
EXPORT_NEW_TOKENS = 200
# How lmtrain encodes text in training and generation: no tokens around it.
AS_TRAINED = {"add_special_tokens": False}
# Post-processors that put tokens around a text; the others (ByteLevel: offsets) are kept.
ADDING = ("TemplateProcessing", "BertProcessing", "RobertaProcessing")
# A template that adds nothing (what transformers writes for add_bos_token=False): a
# post-processor of None is rebuilt by transformers on loading, from its own defaults.
ADDS_NOTHING = {
    "type": "TemplateProcessing",
    "single": [{"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {},
}


def refuse_slow(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Refuse a slow tokenizer: an export holds tokenizer.json, which only a fast one writes."""
    if not tokenizer.is_fast:
        raise LMTrainError(
            f"ckpt_path={source!r} has a slow tokenizer ({type(tokenizer).__name__}): "
            "exports carry fast tokenizers only; train with one that ships tokenizer.json"
        )


def probe_text(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> str:
    """The text of the export's probe `ids` (special tokens left out), which the exported
    tokenizer must encode as training did."""
    return tokenizer.decode(ids[0].tolist(), skip_special_tokens=True)


def adds_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokens `tokenizer(text)` puts around any text (`<s>` of Llama's), [] for none."""
    return tokenizer.convert_ids_to_tokens(tokenizer("").input_ids)


def stop_adding_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the fast `tokenizer` a post-processor that adds no token to a text, in place, and say
    which it added; a Sequence keeps its members that add none (ByteLevel offsets)."""
    if not (added := adds_tokens(tokenizer)):
        return
    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())
    state["post_processor"] = without_adding(state.get("post_processor"))
    backend.post_processor = Tokenizer.from_str(json.dumps(state)).post_processor
    log.info(
        "The tokenizer puts %s around every text, which training never saw (it encodes with "
        "add_special_tokens=False): the export's tokenizer adds none, and keeps them as tokens",
        " ".join(added),
    )


def without_adding(processor: dict[str, Any] | None) -> dict[str, Any]:
    """A tokenizer.json `post_processor` without the parts that add tokens."""
    if processor is None or processor.get("type") in ADDING:
        return ADDS_NOTHING
    if processor.get("type") == "Sequence":
        kept = [without_adding(p) for p in processor.get("processors") or []]
        kept = [p for p in kept if p is not ADDS_NOTHING]
        return {**processor, "processors": kept} if kept else ADDS_NOTHING
    return processor


def split_special_text(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the fast `tokenizer`, as saved, read a special token's spelling in a text as its
    characters, as training did (`lmtrain.data.encode.plain_text_tokenizer`): called plainly
    it gave the end-of-text id for `a<|endoftext|>b`, which no window of training held there.

    `split_special_tokens` of tokenizer_config.json, which transformers' loader honours. Not
    for a tokenizer with a chat template: apply_chat_template encodes its markers (`<|im_start|>`)
    with the tokenizer's default, and split they would be text the model never saw as markers.
    Nor for a char vocabulary that cannot spell the end-of-text token as text: split, plain
    transformers' `tokenizer(text + tokenizer.eos_token)` (and lm-eval's stop sequence) raised
    tokenizers' "Missing [UNK] token" (red teams rev_diff22b, after25), and no text training
    could encode holds that spelling, so reading it as the token departs from training nowhere.
    """
    if getattr(tokenizer, "chat_template", None):
        return
    tokenizer.split_special_tokens = True
    if not spells_eos(tokenizer):
        tokenizer.split_special_tokens = False
        tokenizer.init_kwargs.pop("split_special_tokens", None)  # a re-export of an old export
        return
    tokenizer.init_kwargs["split_special_tokens"] = True  # save_pretrained writes these keys


def spells_eos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether `tokenizer`, as set, encodes its end-of-text token's spelling without failing
    (a char vocabulary has no unknown token for the characters it lacks)."""
    try:
        tokenizer.encode(tokenizer.eos_token or "", add_special_tokens=False)
    except Exception:  # tokenizers' "Missing [UNK] token" and the like
        return False
    return True


def reading_specials_as_text(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of `tokenizer` that reads a special token's spelling in a text as the export's
    tokenizer does (`split_special_text`): for callers that encode text plainly (lm-eval's HFLM),
    so a .ckpt scores what its export scores. lm-eval encodes the end-of-text spelling as a
    generation's stop sequence: a char vocabulary without its characters keeps reading it as
    the token (rev_diff22b: every generate_until task failed)."""
    copied = copy.deepcopy(tokenizer)  # the caller's tokenizer keeps its own settings
    split_special_text(copied)
    return copied


def save_tokenizer(
    folder: Path, tokenizer: PreTrainedTokenizerBase, context: int | None
) -> tuple[str, bool]:
    """Save `tokenizer` (changed in place: `stop_adding_tokens`) into `folder` as an export holds
    it; return the digest of the tokenizer as it loads back, and whether it adds no tokens there.

    False when transformers' loader puts the tokens back (a tokenizer class of its own): the
    export then says so in one line, and its model card passes add_special_tokens=False.
    """
    stop_adding_tokens(tokenizer)
    split_special_text(tokenizer)
    if not tokenizer.split_special_tokens and not getattr(tokenizer, "chat_template", None):
        log.info(
            "The vocabulary cannot spell %r as text: the export's tokenizer reads that spelling "
            "as the end-of-text token",
            tokenizer.eos_token,
        )
    # Tokenizers built here know no length limit; the model's context is the real one.
    tokenizer.model_max_length = context or tokenizer.model_max_length
    # The code an `auto_map` names is never copied (nor run): the export must not ask for it.
    tokenizer.init_kwargs.pop("auto_map", None)
    tokenizer.save_pretrained(folder)
    saved = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    if added := adds_tokens(saved):
        log.warning(
            "The exported tokenizer puts %s around a text called plainly, which training never "
            "saw: call it with add_special_tokens=False (as its model card shows)",
            " ".join(added),
        )
    return tokenizer_digest(saved), not added


def check_encoding(folder: Path, trained: PreTrainedTokenizerBase, text: str) -> None:
    """Refuse the export in `folder` when its tokenizer, reloaded, does not encode `text` called
    plainly as training did with `trained` (the checkpoint's); a tokenizer whose loader puts its
    tokens back (see `save_tokenizer`) is checked with add_special_tokens=False."""
    saved = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    want = trained(text, **AS_TRAINED).input_ids
    got = saved(text).input_ids
    if got != want and adds_tokens(saved):
        got = saved(text, **AS_TRAINED).input_ids
    if got != want:
        raise LMTrainError(
            f"the export in {folder} encodes {text[:40]!r} as {got[:8]}..., but training "
            f"encoded it as {want[:8]}...: export with lmtrain's own tokenizer files (a "
            "checkpoint or an export), or report it as a bug"
        )


def length_settings(
    settings: dict[str, Any], context: int | None, run_config: dict[str, Any]
) -> dict[str, Any]:
    """`settings` with the length of a plain `model.generate` bounded: GPT-2's learned positions
    cannot run past the context (an IndexError in every plain generate). A max_length given
    wins over export.yaml's max_new_tokens (the context replaced it). Without one, max_new_tokens
    that reaches the limit is saved as max_length=<limit>: the context, or data.block_size for a
    model trained from scratch (model.pretrained=null) on shorter windows, past which it never
    learned to go on (export.yaml's 200 new tokens gave garbage)."""
    new_tokens, max_length = settings.get("max_new_tokens"), settings.get("max_length")
    limit, why = context, "the model's context"
    if max_length is not None:
        if type(max_length) is not int or max_length < 1:
            why = "is not a whole number of at least 1: pass generation.max_length=<tokens>"
            raise LMTrainError(f"generation.max_length={max_length!r} {why}")
        if new_tokens not in (None, EXPORT_NEW_TOKENS):
            raise LMTrainError(
                f"generation.max_length={max_length} and generation.max_new_tokens={new_tokens} "
                "both bound the generated text: set one, and the other to null"
            )
        if settings.pop("max_new_tokens", None) is not None:  # transformers would prefer it
            log.info("generation.max_length=%d given: max_new_tokens not saved", max_length)
        settings["max_length"] = min(max_length, limit or max_length)
        if settings["max_length"] < max_length:
            log.info("generation.max_length=%d saved as %d (%s)", max_length, limit, why)
        return settings
    if (block := scratch_windows(run_config)) is not None and (not context or block < context):
        limit, why = block, "data.block_size: the windows it was trained on from scratch"
        why += f"; its context is {context}" if context else ""
    if limit and isinstance(new_tokens, int) and new_tokens >= limit:
        del settings["max_new_tokens"]  # prompt + new tokens would always run past the limit
        settings["max_length"] = limit
        log.info("generation.max_new_tokens=%d saved as max_length=%d (%s)", new_tokens, limit, why)
    return settings


def scratch_windows(run_config: dict[str, Any]) -> int | None:
    """data.block_size of a run that trained a model from scratch (model.pretrained=null), or
    None: a fine-tune, whose model learned its whole context before (read as stored: any shape)."""
    model, data = run_config.get("model"), run_config.get("data")
    if not isinstance(model, dict) or "pretrained" not in model or model["pretrained"] is not None:
        return None
    block = data.get("block_size") if isinstance(data, dict) else None
    return block if type(block) is int and block > 0 else None
