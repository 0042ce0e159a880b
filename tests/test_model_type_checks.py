"""A model type transformers has no causal LM of is refused before any work.

`model.model_type=t5` (an encoder-decoder) was refused as the model was built, once the corpus
had been tokenized into the token cache (lmtrain.utils.model_checks).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

NO_CAUSAL_LM = (
    "has no causal LM in transformers (an encoder or encoder-decoder model): use a decoder type "
    "(gpt2, llama, mistral, qwen2, ...)"
)


def test_an_encoder_decoder_type_is_refused_before_the_corpus_is_tokenized(
    tmp_path: Path, data_dir: Path
) -> None:
    cache = tmp_path / "cache"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", f"data.cache_dir={cache}")
    t5 = ["model.model_type=t5", "~model.config", "+model.config={d_model: 32, num_layers: 1}"]
    result = run_cli("train", *cli, *t5)
    assert assert_one_line_error(result) == f"error: model.model_type='t5' {NO_CAUSAL_LM}"
    assert not cache.exists(), "nothing is prepared before the check"


@pytest.mark.parametrize("model_type", ["mt5", "t5"])
def test_the_check_names_the_type(compose_cfg: Callable[..., DictConfig], model_type: str) -> None:
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(f"model.model_type={model_type}", "~model.config"))
    assert str(err.value) == f"model.model_type={model_type!r} {NO_CAUSAL_LM}"


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_decoder_types_pass(compose_cfg: Callable[..., DictConfig], model_type: str) -> None:
    check_train_config(compose_cfg(f"model.model_type={model_type}", "~model.config"))
