"""Nothing read back from disk is trusted: a token cache or tokenizer folder that is damaged,
edited or swapped is rebuilt or refused in one line, and corpus text is encoded as plain text."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmtrain.data.cache_checks import find_problem
from lmtrain.data.checksums import BLOCK_BYTES, SAMPLED_BLOCKS
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, fingerprint, load_meta, load_tokenizer
from lmtrain.data.tokenizers import (
    EOS_TOKEN,
    MAX_BPE_VOCAB_SIZE,
    TokenizerSettings,
    bpe_tokenizer,
    check_tokenizer_config,
    pretrained_tokenizer,
)
from lmtrain.data.windows import RandomWindows
from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import Problems
from tests.helpers.corpora import load_splits, one_file_corpus, split_at_eos, token_files
from tests.helpers.faults import drop_root_file_access

CHAR = TokenizerSettings("char")
BPE = TokenizerSettings("bpe", vocab_size=300)
TEXT = "def f(x):\n    return x  # the quick brown fox\n" * 20


@pytest.fixture
def source(tmp_path: Path) -> TextFilesSource:
    return TextFilesSource(str(one_file_corpus(tmp_path / "corpus")))


def rebuilt_after(
    damage: Any, cache_dir: Path, source: TextFilesSource, settings: TokenizerSettings, caplog
) -> str:
    """Build, damage the folder, build again: the second build must give a fresh build's files.
    Returns the warning that explains the rebuild."""
    folder = build_or_load(cache_dir, source, settings, workers=1)
    fresh = token_files(folder)
    damage(folder)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmtrain.data.token_cache"):
        again = build_or_load(cache_dir, source, settings, workers=1)
    assert again == folder and token_files(folder) == fresh
    assert load_tokenizer(folder).eos_token_id == load_meta(folder)["eos_token_id"]
    assert "is damaged" in caplog.text, "the damaged cache was reused"
    return caplog.text


def edit_meta(folder: Path, **changes: Any) -> None:
    meta = load_meta(folder)
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


# Finding 6: every file that defines a local tokenizer is in the fingerprint.
def test_editing_a_pretrained_tokenizers_eos_token_builds_a_new_cache(
    tmp_path: Path, source: TextFilesSource
) -> None:
    bpe_tokenizer([TEXT], 300).save_pretrained(tmp_path / "tok")
    settings = TokenizerSettings("pretrained", name=str(tmp_path / "tok"))
    first = build_or_load(tmp_path / "cache", source, settings, workers=1)
    config = tmp_path / "tok" / "tokenizer_config.json"
    config.write_text(config.read_text().replace(json.dumps(EOS_TOKEN), json.dumps(".")))

    second = build_or_load(tmp_path / "cache", source, settings, workers=1)
    assert second != first
    dot = pretrained_tokenizer(str(tmp_path / "tok")).convert_tokens_to_ids(".")
    assert load_meta(second)["eos_token_id"] == dot != load_meta(first)["eos_token_id"]


# Finding 7: the spelling of the end-of-text token in a corpus is text, not a document boundary.
@pytest.mark.parametrize("kind", ["char", "bpe", "pretrained"])
def test_end_of_text_spelled_in_the_corpus_is_plain_text(tmp_path: Path, kind: str) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = [f"doc {i} mentions {EOS_TOKEN} twice: {EOS_TOKEN}.\n" + TEXT for i in range(8)]
    for i, doc in enumerate(docs):
        (corpus / f"doc{i}.txt").write_text(doc)
    source = TextFilesSource(str(corpus), val_fraction=0.25)
    settings = BPE if kind != "char" else CHAR
    if kind == "pretrained":
        bpe_tokenizer(docs, 300).save_pretrained(tmp_path / "tok")
        settings = TokenizerSettings("pretrained", name=str(tmp_path / "tok"))
    folder = build_or_load(tmp_path / "cache", source, settings, workers=1)
    tokenizer, meta = load_tokenizer(folder), load_meta(folder)
    for split, texts in zip(("train", "val"), load_splits(source), strict=True):
        encoded = split_at_eos(folder, split, tokenizer.eos_token_id)
        assert len(encoded) == len(texts) == meta["documents"][split] > 0
        assert [tokenizer.decode(ids) for ids in encoded] == texts


# Finding 8: a folder whose meta.json, tokenizer or dtype is not its own is rebuilt.
def test_another_tokenizers_cache_swapped_in_is_rebuilt(
    tmp_path: Path, source: TextFilesSource, caplog: pytest.LogCaptureFixture
) -> None:
    char_folder = build_or_load(tmp_path / "cache", source, CHAR, workers=1)

    def swap(folder: Path) -> None:
        shutil.rmtree(folder)
        shutil.copytree(char_folder, folder)

    warning = rebuilt_after(swap, tmp_path / "cache", source, BPE, caplog)
    assert "meta.json belongs to the cache" in warning


def test_another_tokenizer_copied_into_a_cache_is_rebuilt(
    tmp_path: Path, source: TextFilesSource, caplog: pytest.LogCaptureFixture
) -> None:
    bpe_folder = build_or_load(tmp_path / "other", source, BPE, workers=1)

    def copy_tokenizer(folder: Path) -> None:
        for path in (bpe_folder / "tokenizer").iterdir():
            shutil.copy(path, folder / "tokenizer" / path.name)

    warning = rebuilt_after(copy_tokenizer, tmp_path / "cache", source, CHAR, caplog)
    assert "tokenizer/ does not match its checksums" in warning


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"dtype": "float16"}, "meta.json dtype 'float16', but"),
        ({"dtype": "uint32"}, "meta.json dtype 'uint32', but"),
        ({"vocab_size": 300}, "tokenizer/ has"),
        ({"eos_token_id": 0}, "tokenizer/ has"),
    ],
)
def test_meta_that_disagrees_with_the_folder_is_rebuilt(
    tmp_path: Path,
    source: TextFilesSource,
    caplog: pytest.LogCaptureFixture,
    changes: dict,
    reason: str,
) -> None:
    warning = rebuilt_after(
        lambda folder: edit_meta(folder, **changes), tmp_path / "cache", source, CHAR, caplog
    )
    assert reason in warning


# Finding 14: meta.json that parses but has another shape is damage, not a traceback.
@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "meta.json").write_text("[]"),
        lambda folder: edit_meta(folder, tokens={"train": "32663", "val": "3631"}),
        lambda folder: edit_meta(folder, tokens={"train": True, "val": 1}),
        lambda folder: edit_meta(folder, checksums=["x"]),
        lambda folder: edit_meta(folder, vocab_size="65"),
        lambda folder: edit_meta(folder, tokenizer_checksums=None),
    ],
    ids=["array", "string counts", "bool count", "checksums list", "string vocab", "no digests"],
)
def test_meta_of_the_wrong_shape_is_rebuilt(
    tmp_path: Path, source: TextFilesSource, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    warning = rebuilt_after(damage, tmp_path / "cache", source, CHAR, caplog)
    assert "meta.json" in warning


# Finding 15: a damaged saved tokenizer is damage.
def test_a_damaged_tokenizer_json_in_the_cache_is_rebuilt(
    tmp_path: Path, source: TextFilesSource, caplog: pytest.LogCaptureFixture
) -> None:
    def damage(folder: Path) -> None:
        (folder / "tokenizer" / "tokenizer.json").write_text('{"broken')

    warning = rebuilt_after(damage, tmp_path / "cache", source, CHAR, caplog)
    assert "tokenizer/" in warning


# Finding 20: ids outside the vocabulary between the sampled blocks are one line when read, not an
# IndexError mid-run (a scan of every token file at every start would cost seconds per GB).
def test_ids_out_of_range_between_sampled_blocks_are_one_line_when_read(tmp_path: Path) -> None:
    corpus = one_file_corpus(tmp_path / "corpus")
    corpus.write_text(corpus.read_text() * 40)  # train.bin well over 64 blocks of 4 KiB
    folder = build_or_load(tmp_path / "cache", TextFilesSource(str(corpus)), CHAR, workers=1)
    path, meta = folder / "train.bin", load_meta(folder)
    step = path.stat().st_size // SAMPLED_BLOCKS
    assert step >= 2 * BLOCK_BYTES, "the damage must fall between two sampled blocks"
    offset = (step // 2) & ~1
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xff\xff" * 8)
    assert find_problem(folder) is None  # the sampled checksums cannot see it
    windows = RandomWindows(path, meta["dtype"], meta["vocab_size"], meta["tokens"]["train"], 32)
    assert windows[0].max() < meta["vocab_size"]  # undamaged windows read as before
    with pytest.raises(LMTrainError, match=r"holds the id 65535 at tokens .* past the vocabulary"):
        windows[offset // 2 - 4]


# Finding 16: a read-only cache_dir is one line naming it, and still serves a complete cache.
ROOT_WITHOUT_CAPS = os.geteuid() != 0 and os.access("/", os.W_OK)
READ_ONLY_CHILD = """
import json, sys
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
source = TextFilesSource(sys.argv[1])
print(build_or_load(sys.argv[2], source, TokenizerSettings("char"), workers=1))
try:
    build_or_load(sys.argv[2], source, TokenizerSettings("bpe", vocab_size=300), workers=1)
except LMTrainError as err:
    print(f"error: {err}")
"""


@pytest.mark.skipif(ROOT_WITHOUT_CAPS, reason="needs file modes")
def test_a_read_only_cache_dir_serves_its_cache_and_refuses_a_build_in_one_line(
    tmp_path: Path, source: TextFilesSource
) -> None:
    cache_dir = tmp_path / "cache"
    folder = build_or_load(cache_dir, source, CHAR, workers=1)
    cache_dir.chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-c", READ_ONLY_CHILD, source.paths[0], str(cache_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=drop_root_file_access if os.geteuid() == 0 else None,
        )
    finally:
        cache_dir.chmod(0o755)
    assert result.returncode == 0, result.stderr
    served, error = result.stdout.strip().splitlines()
    assert served == str(folder)
    key = fingerprint(source, BPE)
    assert error == (
        f"error: data.cache_dir={cache_dir} cannot be written (Permission denied: "
        f"{cache_dir / key}.lock): pass a writable data.cache_dir"
    )


# Findings 18 and 10: a pretrained tokenizer folder is untrusted input.
@pytest.mark.parametrize(("file", "content"), [("tokenizer.json", "[]"), ("config.json", "[1,2]")])
def test_a_tokenizer_folder_with_a_json_array_is_one_line(
    tmp_path: Path, file: str, content: str
) -> None:
    bpe_tokenizer([TEXT], 300).save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / file).write_text(content)
    with pytest.raises(LMTrainError) as err:
        pretrained_tokenizer(str(tmp_path / "tok"))
    message = str(err.value)
    assert message.startswith(f"data.tokenizer.name={str(tmp_path / 'tok')!r} has a {file}")
    assert "list, not an object" in message and "\n" not in message


def test_a_tokenizer_folder_with_custom_code_never_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, marker = tmp_path / "tok", tmp_path / "code_ran"
    bpe_tokenizer([TEXT], 300).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "CustomTokenizer"
    config["auto_map"] = {"AutoTokenizer": ["custom.CustomTokenizer", "custom.CustomTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    monkeypatch.setattr("builtins.input", lambda *args: "y")  # a user who would answer yes

    with pytest.raises(LMTrainError, match=r"data\.tokenizer\.name=.*custom code") as err:
        pretrained_tokenizer(str(folder))
    assert "\n" not in str(err.value)
    shutil.copytree(folder, tmp_path / "cache" / "tokenizer")
    with pytest.raises(ValueError, match="custom code"):
        load_tokenizer(tmp_path / "cache")
    assert not marker.exists()


def test_an_auto_map_beside_a_built_in_class_runs_no_code_and_is_not_copied(
    tmp_path: Path, source: TextFilesSource
) -> None:
    """transformers loads a built-in `tokenizer_class` and ignores the folder's `auto_map`; the
    token cache's copy (which exports and eval reload) must not name code it does not carry."""
    folder, marker = tmp_path / "tok", tmp_path / "code_ran"
    bpe_tokenizer([TEXT], 300).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["custom.CustomTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")

    settings = TokenizerSettings("pretrained", name=str(folder))
    cache = build_or_load(tmp_path / "cache", source, settings, workers=1)
    copied = json.loads((cache / "tokenizer" / "tokenizer_config.json").read_text())
    assert "auto_map" not in copied
    reference = pretrained_tokenizer(str(folder))
    assert load_tokenizer(cache).encode("x = 1") == reference.encode("x = 1")
    assert not marker.exists()


# Finding 21: an absurd BPE vocabulary size is one line, before Rust tries to allocate it.
def test_a_bpe_vocab_size_above_the_bound_is_one_line() -> None:
    problems = Problems()
    check_tokenizer_config({"kind": "bpe", "vocab_size": 5_000_000_000}, problems)
    with pytest.raises(LMTrainError, match=f"vocab_size=5000000000 must be at most {2**20}"):
        problems.raise_if_any()
    with pytest.raises(LMTrainError, match="vocab_size=1048577 is too large: use at most"):
        bpe_tokenizer([TEXT], MAX_BPE_VOCAB_SIZE + 1)
