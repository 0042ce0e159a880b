"""Sample text from a causal LM with transformers' own `generate` (KV cache included).

Shared by the samples callback, `lmtrain.generate` and the export's self-check, so all three decode
the same way. `prompt_problem` tells, before any sampling, whether a prompt can be continued at all:
the samples callback checks its prompts with it before training, `lmtrain.generate` before loading
the model onto a device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.data.coverage import format_characters, unencodable_characters
from lmtrain.errors import LMTrainError
from lmtrain.models.hf import context_length

# Characters of a prompt quoted in a message: a prompt file can be long.
QUOTED_CHARS = 60


class PromptProblem(NamedTuple):
    """Why a prompt cannot be continued, and the prompt to pass instead."""

    reason: str
    fix: str


# How a prompt is encoded: a special token's spelling in it is text, as in the token cache
# (`plain_text_tokenizer`), so `<|endoftext|>` typed is no document boundary the model saw.
AS_TEXT = {"add_special_tokens": False, "split_special_tokens": True}


def prompt_problem(
    tokenizer: PreTrainedTokenizerBase, prompt: str, context: int | None
) -> PromptProblem | None:
    """None when `prompt` can be continued; else characters the tokenizer cannot encode (a char
    tokenizer has no unknown token), or a prompt that fills the context (nothing left to
    generate). Checked before sampling: `generate_text` on such a prompt raises deep inside.
    """

    def encode(text: str) -> list[int]:
        return tokenizer(text, **AS_TEXT).input_ids

    try:
        n_tokens = len(encode(prompt))
    except Exception:  # the Rust tokenizer raises a bare Exception that names no character
        characters = unencodable_characters(encode, prompt)
        reason = "cannot be encoded by the tokenizer"
        if characters:
            reason = (
                f"holds characters the tokenizer cannot encode: {format_characters(characters)}"
            )
        return PromptProblem(
            reason, "a prompt of characters from the corpus the tokenizer was built on"
        )
    if n_tokens == 0:  # a new document: one start token (`start_token_id`), if there is one
        if start_token_id(tokenizer) is None:
            return PromptProblem(
                "encodes to no tokens, and the tokenizer has no eos or bos token to start a new "
                "document from",
                "a non-empty prompt",
            )
        n_tokens = 1
    if context is not None and n_tokens >= context:
        return PromptProblem(
            f"is {n_tokens} tokens long and the model's context is {context}, which leaves "
            "nothing to generate",
            f"a prompt shorter than {context} tokens",
        )
    return None


def quote(prompt: str) -> str:
    """The prompt's repr, cut after QUOTED_CHARS characters."""
    if len(prompt) <= QUOTED_CHARS:
        return repr(prompt)
    return repr(prompt[:QUOTED_CHARS]) + f"... ({len(prompt)} characters)"


def start_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token a new document starts from (an empty prompt): end-of-text, which is what
    separates documents in training, as GPT-2 does; else beginning-of-text, what transformers'
    `generate` starts from with no input; None when the tokenizer has neither."""
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return tokenizer.bos_token_id


@torch.inference_mode()
def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> torch.Tensor:
    """The prompt's ids as a batch of one; a prompt of no tokens is the start token alone
    (`start_token_id`). `prompt_problem` refuses it first where there is none."""
    ids = tokenizer(prompt, return_tensors="pt", **AS_TEXT).input_ids
    if ids.shape[1]:
        return ids
    start = start_token_id(tokenizer)
    if start is None:
        raise LMTrainError(
            f"prompt={quote(prompt)} encodes to no tokens, and the tokenizer has no eos or bos "
            "token to start a new document from: pass a non-empty prompt"
        )
    return torch.tensor([[start]])


def new_token_budget(config: PretrainedConfig, prompt_tokens: int, max_new_tokens: int) -> int:
    """`max_new_tokens`, capped so the sequence fits the model's context: HF models with
    learned positions (GPT-2) cannot run past it."""
    limit = context_length(config)
    return max_new_tokens if limit is None else max(0, min(max_new_tokens, limit - prompt_tokens))


def sequence_length(
    tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig, prompt: str, max_new_tokens: int
) -> tuple[int, int]:
    """(prompt tokens, prompt and new tokens): how long the text `generate_text` writes runs.

    Callers compare it with the windows a from-scratch model trained on (its data.block_size):
    positions past them never got a gradient (GPT-2 learns one embedding per position), and the
    text there turns to garbage with nothing said.
    """
    prompt_tokens = prompt_ids(tokenizer, prompt).shape[1]
    return prompt_tokens, prompt_tokens + new_token_budget(config, prompt_tokens, max_new_tokens)


def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    stop_at_eos: bool = False,
) -> list[str]:
    """Return `num_samples` strings, each the prompt followed by its completion.

    With `stop_at_eos` a completion ends where the model ends the document, as plain
    `model.generate` does, and the end-of-text token is not printed. Without it, generation runs
    on for `max_new_tokens` and document boundaries show as the eos token's text: a training
    sample shows the style, whatever document it lands in. Nothing is suppressed either way, so
    the tokens are the model's own choices. New tokens are capped so the sequence fits the
    model's context: HF models with learned positions (GPT-2) cannot run past it.
    """
    ids = prompt_ids(tokenizer, prompt)
    max_new_tokens = new_token_budget(model.config, ids.shape[1], max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(
            ids.to(model.device).repeat(num_samples, 1),
            attention_mask=torch.ones_like(ids).to(model.device).repeat(num_samples, 1),
            max_new_tokens=max_new_tokens,
            # An export's generation_config caps a plain generate with max_length, which
            # max_new_tokens (capped above) overrides anyway: None spares transformers' warning.
            max_length=None,
            do_sample=not greedy,
            # None overrides the model's generation_config (an export's sampling defaults).
            temperature=None if greedy else temperature,
            top_k=None if greedy else top_k,
            top_p=None if greedy else top_p,
            eos_token_id=tokenizer.eos_token_id if stop_at_eos else None,
            pad_token_id=tokenizer.eos_token_id,
        )
    finally:
        model.train(was_training)
    text_start = 0 if tokenizer(prompt, **AS_TEXT).input_ids else 1  # past a start token
    return [
        continued(tokenizer, prompt, row.tolist(), text_start, ids.shape[1], stop_at_eos)
        for row in output
    ]


def continued(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    row: list[int],
    text_start: int,
    prompt_end: int,
    skip_special_tokens: bool,
) -> str:
    """`prompt` as typed, followed by what the decoded row adds to the decoded prompt.

    The new tokens decoded alone lose what depends on the tokens before them: a
    SentencePiece-style decoder (Metaspace, Llama's `Strip`) drops the space a first token's
    `▁` stands for, so "the" + "▁words" printed "thewords". So the row is decoded whole, as
    plain transformers does, from `text_start` (past the start token of an empty prompt, whose
    text starts a document), and the decoded prompt is cut from its front. Where the full decode
    does not start with the decoded prompt (a decoder's clean-up reaching across the
    boundary), the new tokens are decoded alone, the best left. The prompt is kept as typed,
    not as decoded (a normalizer can change it), so every text starts with the prompt.
    """
    full = tokenizer.decode(row[text_start:], skip_special_tokens=skip_special_tokens)
    head = tokenizer.decode(row[text_start:prompt_end], skip_special_tokens=skip_special_tokens)
    if full.startswith(head):
        return prompt + full[len(head) :]
    return prompt + tokenizer.decode(row[prompt_end:], skip_special_tokens=skip_special_tokens)
