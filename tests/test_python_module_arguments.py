"""`CausalLMModule` built or loaded from Python, where no config check ran before it: what the
command line refuses in one line is refused here in one line too, before any work (red team
rev_api). It failed deep in transformers, at the first step, or (Llama's default size) in the
kernel's OOM killer."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from tests.test_python_api import CONFIG, fit_and_save, module

COSINE = transformers.get_cosine_schedule_with_warmup
ARGUMENTS = {
    "warm-up from no tokens": (
        {"seq_len_warmup": {"start": 0, "steps": 10}},
        "model.seq_len_warmup.start=0 must be at least 1",
    ),
    "warm-up keys": (
        {"seq_len_warmup": {"begin": 8}},
        "model.seq_len_warmup={'begin': 8}: pass null or",
    ),
    "a width as text": (
        {"config": {**CONFIG, "n_embd": "32"}},
        "model.config.n_embd='32' is not a whole number",
    ),
    "a numpy integer": (
        {"config": {**CONFIG, "n_layer": np.int64(1)}},
        "model.config.n_layer=np.int64(1) is not a whole number",
    ),
    "a schedule missing its warm-up": (
        {"scheduler": COSINE},
        "scheduler=get_cosine_schedule_with_warmup needs num_warmup_steps, which nothing passes",
    ),
    "an optimizer's config name": (
        {"optimizer": "adamw"},
        "optimizer='adamw' is not callable: pass a class or a functools.partial",
    ),
    "a schedule's config name": (
        {"scheduler": "cosine"},
        "scheduler='cosine' is not callable: pass a class or a functools.partial, e.g. "
        "functools.partial(transformers.get_cosine_schedule_with_warmup",
    ),
}


@pytest.mark.parametrize("case", ARGUMENTS)
def test_an_argument_the_config_checks_refuse_is_one_line(case: str) -> None:
    settings, expected = ARGUMENTS[case]
    with pytest.raises(LMTrainError) as refused:
        module(None, **settings)
    assert str(refused.value).startswith(expected), refused.value
    assert "\n" not in str(refused.value)


def test_a_bound_schedule_and_a_plain_optimizer_class_are_taken() -> None:
    scheduler = functools.partial(COSINE, num_warmup_steps=2)
    assert module(None, optimizer=torch.optim.SGD, scheduler=scheduler).model is not None


def test_a_default_model_too_big_for_the_machine_is_refused_before_it_is_built() -> None:
    """`CausalLMModule(model_type="llama")`: transformers' default Llama has 6.7B parameters.
    The refusal is counted on the meta device, against this machine's memory."""
    from lmtrain.models.hf import refuse_default_size

    config = transformers.AutoConfig.for_model("llama")
    refuse_default_size("gpt2", transformers.AutoConfig.for_model("gpt2"))  # 124M: fits
    with pytest.raises(LMTrainError) as refused:
        refuse_default_size("llama", config.__class__(**{**config.to_dict(), "hidden_size": 16384}))
    assert "with no config is transformers' default llama (" in str(refused.value)
    assert "pass config={...} with its size" in str(refused.value)


def test_load_from_checkpoint_refuses_a_misspelt_keyword_and_names_a_size_mismatch(
    tmp_path: Path, data_dir: Path
) -> None:
    """A misspelt `optimzer=` was dropped by Lightning without a word (AdamW stayed); a config
    of other sizes was torch's 500-character state-dict error."""
    from tests.helpers.corpora import one_file_corpus

    corpus = one_file_corpus(tmp_path / "corpus")
    path = fit_and_save(tmp_path, corpus, data_dir, steps=2)
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    with pytest.raises(LMTrainError, match=r"CausalLMModule takes no optimzer; did you mean opt"):
        CausalLMModule.load_from_checkpoint(path, optimzer=sgd)
    assert CausalLMModule.load_from_checkpoint(path, optimizer=sgd).optimizer_factory is sgd
    with pytest.raises(LMTrainError) as refused:
        CausalLMModule.load_from_checkpoint(path, config={**CONFIG, "n_layer": 2})
    message = str(refused.value)
    assert message.startswith(f"{str(path)!r} does not fit the model the arguments build ("), (
        message
    )
    assert message.endswith("or pass strict=False to load what fits") and "\n" not in message


def test_load_model_on_a_run_folder_points_at_its_checkpoint(tmp_path: Path) -> None:
    """It said the folder "has no usable tokenizer: copy the tokenizer files into it"."""
    from lmtrain.models.checkpoint import load_model

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")  # none: tests/test_after_training19.py
    (run / "metrics.json").write_text("{}")
    with pytest.raises(LMTrainError) as refused:
        load_model(run)
    assert str(refused.value) == (
        f"ckpt_path={str(run)!r} is a training run's folder, not a model folder: pass its "
        f"checkpoint, {str(run / 'checkpoints' / 'last.ckpt')!r} (or a best-*.ckpt)"
    )


class Smoothed(CausalLMModule):
    """A subclass with an argument of its own, as README's "your own module" suggests."""

    def __init__(self, label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing


def test_load_from_checkpoint_of_a_subclass_takes_its_own_keywords(
    tmp_path: Path, data_dir: Path
) -> None:
    """The keyword check read CausalLMModule's signature, not the loading class's: a subclass's
    own argument was refused (red team rev_diff11)."""
    from tests.helpers.corpora import one_file_corpus

    path = fit_and_save(tmp_path, one_file_corpus(tmp_path / "corpus"), data_dir, steps=2)
    assert Smoothed.load_from_checkpoint(path, label_smoothing=0.1).label_smoothing == 0.1
