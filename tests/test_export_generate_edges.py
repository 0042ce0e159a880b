"""An export's tokenizer called plainly reads a special token's spelling as text, as training did;
`lmtrain.generate` from an export prints no transformers warning about its max_length.

Red team: `AutoTokenizer.from_pretrained(export)('a<|endoftext|>b').input_ids` held the
end-of-text id where training encoded the characters, and every `lmtrain.generate` from an export
printed transformers' `Both max_new_tokens (=20) and max_length(=48) seem to have been set`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data.encode import plain_text_tokenizer
from lmtrain.models.checkpoint import load_model
from lmtrain.models.export_tokenizer import split_special_text
from tests.helpers.cli import run_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import export_tiny, train_tiny

# Two steps of the tiny GPT-2 with its BPE on 32-token windows: export.yaml's 200 new tokens
# are saved as max_length=32 (the windows it was trained on from scratch).
SHORT_RUN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
SPELT = "The cat<|endoftext|>sat."


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-edges")
    corpus = one_file_corpus(root / "corpus", seed=0)
    ckpt = train_tiny(root / "run", data_dir, corpus, *SHORT_RUN)
    return {"ckpt": ckpt, "export": export_tiny(ckpt, root / "hf", data_dir)}


def test_the_exported_tokenizer_reads_a_special_tokens_spelling_as_training_did(
    trained: dict[str, Path],
) -> None:
    tokenizer = load_model(str(trained["ckpt"])).tokenizer
    training = plain_text_tokenizer(tokenizer.backend_tokenizer.to_str()).encode(SPELT).ids
    assert tokenizer.eos_token_id not in training  # the characters, not the token
    exported = AutoTokenizer.from_pretrained(trained["export"])
    assert exported(SPELT).input_ids == training
    assert exported.eos_token_id == tokenizer.eos_token_id  # still a token, by its id
    config = json.loads((trained["export"] / "tokenizer_config.json").read_text())
    assert config["split_special_tokens"] is True


def test_a_tokenizer_with_a_chat_template_keeps_its_markers() -> None:
    """apply_chat_template encodes its rendered markers with the tokenizer's default: split,
    `<|im_start|>` would be characters a chat model never saw as its markers."""
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<|im_start|>": 1}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}"
    split_special_text(tokenizer)
    assert not tokenizer.split_special_tokens
    assert "split_special_tokens" not in tokenizer.init_kwargs


@pytest.mark.parametrize("new_tokens", [20, 100])
def test_generate_from_an_export_prints_no_max_length_warning(
    new_tokens: int, trained: dict[str, Path], tmp_path: Path
) -> None:
    """100 new tokens run past the 64-token context: lmtrain caps them itself (and says so),
    without the export's max_length, which max_new_tokens overrides in transformers anyway."""
    generation = json.loads((trained["export"] / "generation_config.json").read_text())
    assert generation["max_length"] == 32  # the export's cap for a plain model.generate
    result = run_cli(
        "generate",
        f"ckpt_path={trained['export']}",
        "prompt='The cat'",
        f"max_new_tokens={new_tokens}",
        "greedy=true",
        "stop_at_eos=false",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'gen'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "seem to have been set" not in result.stderr, result.stderr[-3000:]
    assert result.stdout.startswith("The cat")
    capped = f"max_new_tokens={new_tokens} capped at"
    assert (capped in result.stderr) == (new_tokens == 100), result.stderr[-3000:]
