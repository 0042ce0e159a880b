"""The tokenizer a token cache saves is a faithful, checked copy of a pretrained folder's: it loads
when the folder names a versioned tokenizer file, and its subfolders are under the checksums."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmtrain.data.checksums import folder_checksums, full_digest
from lmtrain.data.pretrained_tokenizer import save_tokenizer
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, find_problem, load_meta, load_tokenizer
from lmtrain.data.tokenizers import TokenizerSettings, bpe_tokenizer
from tests.helpers.corpora import one_file_corpus

TEXT = "def f(x):\n    return x  # the quick brown fox\n" * 20
TEMPLATES = {"default": "{{ messages[0]['content'] }}", "tool_use": "{{ tools }} {{ messages }}"}


def build(tmp_path: Path, tokenizer_folder: Path) -> Path:
    """The cache of tmp_path's corpus (written once: a rewrite is a new corpus) and tokenizer."""
    corpus = tmp_path / "corpus" / "corpus.txt"
    source = TextFilesSource(str(corpus if corpus.exists() else one_file_corpus(corpus.parent)))
    settings = TokenizerSettings("pretrained", name=str(tokenizer_folder))
    return build_or_load(tmp_path / "cache", source, settings, workers=1)


def versioned_folder(folder: Path) -> Path:
    """A pretrained folder whose full tokenizer is tokenizer.4.0.0.json, listed in
    tokenizer_config.json's `fast_tokenizer_files` (as some hub repos ship it)."""
    tokenizer = bpe_tokenizer([TEXT], 300)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.save_pretrained(folder)
    (folder / "tokenizer.json").rename(folder / "tokenizer.4.0.0.json")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["fast_tokenizer_files"] = ["tokenizer.4.0.0.json"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_a_versioned_tokenizer_file_gives_a_cache_that_loads_and_is_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """save_pretrained keeps `fast_tokenizer_files` but writes tokenizer.json: the saved copy
    failed to load ("tokenizer/ unreadable") and every start rebuilt the cache."""
    source = versioned_folder(tmp_path / "tok")
    original = AutoTokenizer.from_pretrained(source)
    assert not (source / "tokenizer.json").exists()

    folder = build(tmp_path, source)
    assert find_problem(folder) is None
    copy = load_tokenizer(folder)
    assert copy.get_vocab() == original.get_vocab() and len(copy) == load_meta(folder)["vocab_size"]
    assert copy.special_tokens_map == original.special_tokens_map
    assert copy.pad_token == "<pad>" and copy.eos_token_id == original.eos_token_id
    assert copy(TEXT)["input_ids"] == original(TEXT)["input_ids"]

    with caplog.at_level(logging.INFO, logger="lmtrain.data.token_cache"):
        assert build(tmp_path, source) == folder
    assert "Reusing token cache" in caplog.text and "Building" not in caplog.text


def test_an_edit_in_a_subfolder_of_the_saved_tokenizer_is_found_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """transformers saves extra chat templates under additional_chat_templates/: an edited
    template there is damage like any other, and the rebuild restores the source's."""
    source = tmp_path / "tok"
    tokenizer = bpe_tokenizer([TEXT], 300)
    tokenizer.chat_template = dict(TEMPLATES)
    tokenizer.save_pretrained(source)

    folder = build(tmp_path, source)
    template = folder / "tokenizer" / "additional_chat_templates" / "tool_use.jinja"
    assert template.read_text() == TEMPLATES["tool_use"]
    assert "additional_chat_templates/tool_use.jinja" in load_meta(folder)["tokenizer_checksums"]
    assert find_problem(folder) is None and load_tokenizer(folder).chat_template == TEMPLATES

    template.write_text("{{ tools }} {{ messages | reverse }}")
    assert find_problem(folder) == "tokenizer/ does not match its checksums"
    with caplog.at_level(logging.INFO, logger="lmtrain.data.token_cache"):
        assert build(tmp_path, source) == folder
    assert "is damaged (tokenizer/ does not match its checksums)" in caplog.text
    assert template.read_text() == TEMPLATES["tool_use"] and find_problem(folder) is None


def test_a_flat_tokenizer_folder_keeps_the_checksums_older_caches_recorded(
    tmp_path: Path,
) -> None:
    """Caches written before subfolders counted recorded {file name: sha256} of the files
    directly in tokenizer/: for a folder without subfolders the record is the same."""
    bpe_tokenizer([TEXT], 300).save_pretrained(tmp_path / "tok")
    folder = build(tmp_path, tmp_path / "tok")
    saved = folder / "tokenizer"
    assert all(path.is_file() for path in saved.iterdir())
    recorded_before = {path.name: full_digest(path) for path in saved.iterdir()}
    assert folder_checksums(saved) == recorded_before == load_meta(folder)["tokenizer_checksums"]


def test_save_tokenizer_writes_a_copy_that_loads(tmp_path: Path) -> None:
    """The one way lmtrain saves a loaded tokenizer (the token cache, and eval's copy of a model's
    tokenizer): from a versioned folder, plain save_pretrained writes a copy that fails to load."""
    original = AutoTokenizer.from_pretrained(versioned_folder(tmp_path / "tok"))
    save_tokenizer(original, tmp_path / "copy")
    copy = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert copy.get_vocab() == original.get_vocab()
    assert copy(TEXT)["input_ids"] == original(TEXT)["input_ids"]
