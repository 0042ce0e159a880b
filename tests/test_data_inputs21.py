"""A long document is cut into pieces for encoding, yet its cached ids are those of its whole text,
for SentencePiece-style tokenizers too; a path object is a valid tokenizer name from Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data import TextDataModule
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import load_meta
from lmtrain.data.tokenizers import TokenizerSettings
from tests.helpers.corpora import write_play
from tests.helpers.pretrained import tiny_bpe

# Pieces of about this many characters: a 40 KB play is cut some ten times.
BLOCK = 4096
BYTES = [f"<0x{i:02X}>" for i in range(256)]


def sentencepiece_style(folder: Path, text: str, scheme: str) -> Path:
    """A BPE with byte fallback, Llama's way: a Metaspace pre-tokenizer that prepends "▁" to the
    text (`first` or `always`), or (`legacy`) Llama-2's tokenizer.json, whose normalizer prepends
    "▁" and which has no pre-tokenizer at all."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    prepend = "never" if scheme == "legacy" else scheme
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend)
    tokenizer.decoder = decoders.Metaspace(prepend_scheme=prepend)
    if scheme == "legacy":
        steps = [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        tokenizer.normalizer = normalizers.Sequence(steps)
    special = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special + BYTES)
    tokenizer.train_from_iterator([text], trainer=trainer)
    if scheme == "legacy":
        tokenizer.pre_tokenizer = None
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(folder)
    return folder


def cached_ids(
    tmp_path: Path, corpus: Path, tokenizer: dict, **settings: float
) -> tuple[dict, Path]:
    source = TextFilesSource(path=str(corpus), block_chars=BLOCK)
    data = TextDataModule(
        source, tokenizer, block_size=8, batch_size=2, cache_dir=str(tmp_path / "cache"), **settings
    )
    data.prepare_data()
    meta = load_meta(data.cache_path)
    ids = {
        s: np.fromfile(data.cache_path / f"{s}.bin", meta["dtype"]).tolist() for s in meta["tokens"]
    }
    return ids, data.cache_path


def whole_text_ids(cache_path: Path, corpus: Path) -> dict[str, list[int]]:
    """What the cache's own tokenizer gives the train and val text, each encoded whole."""
    tokenizer = AutoTokenizer.from_pretrained(cache_path / "tokenizer")
    text = corpus.read_text()
    cut = int(len(text) * 0.9)
    parts = {"train": text[:cut], "val": text[cut:]}
    eos = [tokenizer.eos_token_id]
    return {s: tokenizer(t, add_special_tokens=False).input_ids + eos for s, t in parts.items()}


@pytest.fixture(scope="module")
def play(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_play(tmp_path_factory.mktemp("play") / "play.txt", speeches=500)


@pytest.mark.parametrize("scheme", ["first", "always", "legacy"])
def test_sentencepiece_style_cache_is_the_whole_text_encoding(
    tmp_path: Path, play: Path, scheme: str
) -> None:
    folder = sentencepiece_style(tmp_path / "tok", play.read_text(), scheme)
    ids, cache = cached_ids(tmp_path, play, {"kind": "pretrained", "name": str(folder)})
    assert ids == whole_text_ids(cache, play)


@pytest.mark.parametrize("kind", ["char", "bpe", "byte-level pretrained"])
def test_other_tokenizers_keep_the_newline_cuts(tmp_path: Path, play: Path, kind: str) -> None:
    """Their pre-tokenizers break tokens after a newline: the plan leaves the pieces as read."""
    from lmtrain.data.corpus_tokenizer import NEWLINE, choose_cut_plan  # new with the fix

    tokenizer: dict = {"kind": kind, "vocab_size": 300}
    if kind == "byte-level pretrained":
        folder = tmp_path / "gpt2ish"
        tiny_bpe([play.read_text()], 400).save_pretrained(folder)
        tokenizer = {"kind": "pretrained", "name": str(folder)}
    ids, cache = cached_ids(tmp_path, play, tokenizer)
    assert ids == whole_text_ids(cache, play)
    json_text = AutoTokenizer.from_pretrained(cache / "tokenizer").backend_tokenizer.to_str()
    assert choose_cut_plan(json_text) is NEWLINE


def test_fingerprint_changes_for_pretrained_only(tmp_path: Path) -> None:
    """Caches of pretrained tokenizers built with the old cuts are rebuilt; others are kept."""
    assert TokenizerSettings("char").fingerprint() == {"kind": "char"}
    bpe = TokenizerSettings("bpe", vocab_size=300).fingerprint()
    assert bpe == {"kind": "bpe", "vocab_size": 300, "train_sample_mb": None}
    assert "cuts" in TokenizerSettings("pretrained", name="gpt2").fingerprint()
    folder = sentencepiece_style(tmp_path / "tok", "a b c\n" * 50, "first")
    assert "cuts" in TokenizerSettings("pretrained", name=str(folder)).fingerprint()


def test_path_objects_are_taken_as_text(tmp_path: Path, play: Path) -> None:
    """A `Path` for the tokenizer's name, the corpus and the cache folder, as CausalLMModule
    takes `pretrained=Path(...)`: meta.json holds its text."""
    folder = tmp_path / "gpt2ish"
    tiny_bpe([play.read_text()], 400).save_pretrained(folder)
    data = TextDataModule(
        source=play,
        tokenizer={"kind": "pretrained", "name": folder},
        block_size=8,
        batch_size=2,
        cache_dir=tmp_path / "cache",
        log_dir=tmp_path / "logs",
    )
    data.prepare_data()
    meta = json.loads((data.cache_path / "meta.json").read_text())
    assert meta["tokenizer"]["name"] == str(folder)
    assert data.cache_path.parent == tmp_path / "cache"


def test_pieces_stay_whole_across_workers_and_without_spaces(tmp_path: Path, play: Path) -> None:
    """Continuation pieces spread over several workers' chunks still lose their prefix ids; a
    document with no space to cut before is encoded whole."""
    folder = sentencepiece_style(tmp_path / "tok", play.read_text(), "legacy")
    tokenizer = {"kind": "pretrained", "name": str(folder)}
    ids, cache = cached_ids(tmp_path, play, tokenizer, prepare_workers=3, prepare_chunk_mb=0.005)
    assert ids == whole_text_ids(cache, play)
    spaceless = tmp_path / "spaceless.txt"
    spaceless.write_text(play.read_text().replace(" ", ""))
    folder = sentencepiece_style(tmp_path / "tok2", play.read_text(), "first")
    ids, cache = cached_ids(tmp_path, spaceless, {"kind": "pretrained", "name": str(folder)})
    assert ids == whole_text_ids(cache, spaceless)


def test_a_long_document_without_spaces_is_cut_where_it_is_under_the_prefix_plan(
    tmp_path: Path, play: Path
) -> None:
    """Over four blocks of text with no space, the piece is cut where it is, so the next piece
    starts mid-word: under Llama-2's layout the prefix would merge into it, and the whole cache
    build failed (rev_diff21). It is encoded as it is; its ids may differ at that one cut."""
    # Trained with "any" in its text, so that the prefix "a" and "ny..." merge into "▁any".
    folder = sentencepiece_style(tmp_path / "tok", play.read_text() + " any" * 500, "legacy")
    long = tmp_path / "long.txt"
    long.write_text("any" * 400_000 + " tail\n")  # 1.2M characters: over 4 x 256k
    ids, cache = cached_ids(tmp_path, long, {"kind": "pretrained", "name": str(folder)})
    whole = whole_text_ids(cache, long)
    assert abs(len(ids["train"]) - len(whole["train"])) <= 2
    assert ids["val"] == whole["val"]
