"""A pretrained tokenizer folder's fingerprint covers every file transformers reads for it, by
the names transformers gives them, and none of the model weights that may sit next to them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lmtrain.data.cache_checks import find_problem
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, load_meta, load_tokenizer
from lmtrain.data.tokenizers import EOS_TOKEN, TokenizerSettings, bpe_tokenizer
from tests.helpers.corpora import one_file_corpus

TEXT = "def f(x):\n    return x  # the quick brown fox\n" * 20


def fingerprint_of(folder: Path) -> dict:
    return TokenizerSettings("pretrained", name=str(folder)).fingerprint()


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def tekken(merged: list[str]) -> dict:
    """A Mistral-style tekken.json: byte-level BPE ranks (every byte, then `merged`) after three
    special tokens, the layout transformers converts without mistral-common."""
    specials = ["<unk>", "<s>", "</s>"]
    pieces = [bytes([b]) for b in range(256)] + [m.encode() for m in merged]
    return {
        "config": {
            "pattern": r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+",
            "default_vocab_size": len(specials) + len(pieces),
            "default_num_special_tokens": len(specials),
        },
        "vocab": [
            {"rank": i, "token_bytes": base64.b64encode(p).decode()} for i, p in enumerate(pieces)
        ],
        "special_tokens": [{"rank": i, "token_str": s} for i, s in enumerate(specials)],
    }


def test_a_folder_whose_vocabulary_is_not_tokenizer_json_is_rebuilt_when_it_changes(
    tmp_path: Path,
) -> None:
    """No tokenizer.json: transformers reads the vocabulary from tekken.json, so editing it
    must give a new cache with the new vocabulary, not the old cache."""
    folder = tmp_path / "tok"
    write_json(folder / "tekken.json", tekken(["th", "he", "the"]))
    write_json(
        folder / "tokenizer_config.json",
        {"tokenizer_class": "TokenizersBackend", "eos_token": "</s>"},
    )
    source = TextFilesSource(str(one_file_corpus(tmp_path / "corpus")))
    settings = TokenizerSettings("pretrained", name=str(folder))
    first = build_or_load(tmp_path / "cache", source, settings, workers=1)
    assert load_meta(first)["vocab_size"] == 3 + 256 + 3

    write_json(folder / "tekken.json", tekken(["th", "he", "the", "qu", "quick"]))
    second = build_or_load(tmp_path / "cache", source, settings, workers=1)

    assert second != first, "the edited tokenizer reused the stale cache"
    assert load_meta(second)["vocab_size"] == len(load_tokenizer(second)) == 3 + 256 + 5
    assert find_problem(second) is None and find_problem(first) is None


# (the file that names the class, its setting, a file that defines the tokenizer)
DEFINING = [
    (
        "tokenizer_config.json",
        {"tokenizer_class": "XLMRobertaTokenizer"},
        "sentencepiece.bpe.model",
    ),
    ("tokenizer_config.json", {"tokenizer_class": "T5TokenizerFast"}, "spiece.model"),
    ("config.json", {"model_type": "deberta-v2"}, "spm.model"),
    ("config.json", {"model_type": "whisper"}, "normalizer.json"),
    ("tokenizer_config.json", {}, "tokenizer.model.v3"),  # read when tokenizer.json is missing
    ("tokenizer_config.json", {}, "chat_template.jinja"),  # saved with the cache's tokenizer
    ("tokenizer_config.json", {}, "additional_chat_templates/tool_use.jinja"),
]


@pytest.mark.parametrize(("config", "setting", "vocabulary"), DEFINING)
def test_every_file_that_defines_the_tokenizer_is_in_the_fingerprint(
    tmp_path: Path, config: str, setting: dict, vocabulary: str
) -> None:
    """The class is found as AutoTokenizer finds it, in tokenizer_config.json or by
    config.json's model_type, and the files it declares (`vocab_files_names`) are hashed."""
    write_json(tmp_path / config, setting)
    (tmp_path / vocabulary).parent.mkdir(exist_ok=True)
    (tmp_path / vocabulary).write_text('{"v": 1}')
    before = fingerprint_of(tmp_path)
    (tmp_path / vocabulary).write_text('{"v": 2}')  # the same size
    assert vocabulary in before["files"]
    assert fingerprint_of(tmp_path) != before, f"an edited {vocabulary} would reuse a stale cache"


def test_model_weights_next_to_the_tokenizer_are_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    bpe_tokenizer([TEXT], 300).save_pretrained(folder)
    write_json(folder / "config.json", {"model_type": "gpt2", "eos_token": EOS_TOKEN})
    before = fingerprint_of(folder)
    with (folder / "model.safetensors").open("wb") as weights:  # 64 MiB, sparse: no disk used
        weights.truncate(64 << 20)
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 4096)
    write_json(folder / "model.safetensors.index.json", {"weight_map": {}})

    assert fingerprint_of(folder) == before
    assert sorted(before["files"]) == ["config.json", "tokenizer.json", "tokenizer_config.json"]
