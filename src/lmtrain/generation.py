"""Sample text from a causal LM with transformers' own `generate` (KV cache included).

Shared by the samples callback, `lmtrain.generate` and the export's self-check, so all three decode
the same way.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.models.hf import context_length


@torch.inference_mode()
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
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    if ids.shape[1] == 0:  # an empty prompt starts from end-of-text, as GPT-2 does
        ids = torch.tensor([[tokenizer.eos_token_id]])
    limit = context_length(model.config)
    if limit is not None:
        max_new_tokens = max(0, min(max_new_tokens, limit - ids.shape[1]))
    was_training = model.training
    model.eval()
    try:
        output = model.generate(
            ids.to(model.device).repeat(num_samples, 1),
            attention_mask=torch.ones_like(ids).to(model.device).repeat(num_samples, 1),
            max_new_tokens=max_new_tokens,
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
    return [
        prompt + tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=stop_at_eos)
        for row in output
    ]
