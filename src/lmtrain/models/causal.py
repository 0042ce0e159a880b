"""Whether a model is a causal LM: refused in one line where it is not, by every tool.

A next-token loss only measures a model that predicts each token from the tokens before it.
transformers has no causal LM for encoder-decoder types (t5: `no_causal_lm`), and lists
encoders with an LM head (bert, roberta, ...) as causal LMs although they read the whole window
(`check_causal`): training on one, or evaluating one, reports a loss that fell by reading the
answer. Training refuses both as it builds the model (`lmtrain.models.hf`); eval, generate and
export refuse the same folders (`lmtrain.models.model_folder`, `lmtrain.models.pretrained`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from lmtrain.errors import DECODER_MODEL, DECODER_TYPE, LMTrainError, no_causal_lm

__all__ = ["DECODER_MODEL", "DECODER_TYPE", "check_causal", "no_causal_lm", "refuse_nonfinite"]


def check_causal(model: PreTrainedModel, subject: str, saved: bool = False) -> PreTrainedModel:
    """`model`, refused if a later token changes what it predicts at earlier positions.

    transformers lists encoders with an LM head (bert, roberta, ...) as causal LMs; unless their
    config says `is_decoder=True` they attend both ways, only warn, and a next-token loss then
    reads the answer: it falls, and means nothing. Two forwards of 8 tokens, no RNG drawn.
    `saved`: a model folder given to eval, generate or export, whose training is done (no
    model.config to change; is_decoder=true would not undo what it learnt).
    """
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.arange(8).remainder(vocab).unsqueeze(0)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % vocab
    training = model.training
    model.eval()
    with torch.no_grad():
        before, after = (model(input_ids=x, use_cache=False).logits[0, :-1] for x in (ids, changed))
    model.train(training)
    refuse_nonfinite(before, subject, model, saved)
    if not torch.allclose(before.float(), after.float(), rtol=0, atol=1e-6):
        advice = "set +model.config.is_decoder=true, or use a decoder type (gpt2, llama, ...)"
        raise LMTrainError(
            f"{subject} attends to later tokens (an encoder with an LM head), so a next-token "
            f"loss would read the answer: {DECODER_MODEL if saved else advice}"
        )
    return model


def refuse_nonfinite(
    logits: torch.Tensor, subject: str, model: nn.Module, saved: bool = False
) -> None:
    """NaN logits never compare equal: a model broken by its config (layer_norm_epsilon=-1)
    was told it attends to later tokens, and sent to is_decoder=true, which fails the same. A
    weight that is NaN already (damaged pretrained weights) is named instead of the config."""
    if torch.isfinite(logits).all():
        return
    kind = "nan" if logits.isnan().any() else "inf"
    weight = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    when = "" if saved else " before any training"
    if weight is not None:
        raise LMTrainError(
            f"{subject} gives non-finite logits ({kind}){when}, from its weights "
            f"({weight} holds nan or inf): copy or download the weights again"
        )
    if saved:
        raise LMTrainError(
            f"{subject} gives non-finite logits ({kind}): check its config.json values such as "
            "layer_norm_epsilon, rms_norm_eps or rope_theta, or export the checkpoint again"
        )
    raise LMTrainError(
        f"the model built from {subject} and model.config gives non-finite logits ({kind}) "
        "before any training: check model.config values such as layer_norm_epsilon, "
        "rms_norm_eps, rope_theta or initializer_range"
    )
