"""A pretrained tokenizer that drops corpus characters without raising is refused (rev_data23).

tokenizers' BPE with no unknown token and no byte fallback skips characters it has no token
for: the cache lost every newline and "ö" and training went on. Now the cache is refused in
one line naming them; a tokenizer with an unknown token trains, with a warning.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmtrain.data import encode
from lmtrain.data.corpus import Piece
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY

LINES = [f"The quick brown fox {i} jumps over the lazy dog, then rests." for i in range(200)]


def save_metaspace_bpe(folder: Path, unk: bool) -> Path:
    """A SentencePiece-style BPE (Metaspace, " " as "▁") trained on single ASCII lines: it has
    no token for "\\n" or "ö"; with `unk`, an unknown token, else none and no byte fallback."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>" if unk else None))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    specials = ["</s>", "<unk>"] if unk else ["</s>"]
    tokenizer.train_from_iterator(
        LINES, trainers.BpeTrainer(vocab_size=120, special_tokens=specials)
    )
    extra = {"unk_token": "<unk>"} if unk else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", **extra)
    fast.save_pretrained(folder)
    return folder


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "a.txt"
    path.write_text("\n".join(LINES).replace("dog", "dög") + "\n", encoding="utf-8")
    return path


def train(tmp_path: Path, tokenizer: Path) -> tuple[int, str]:
    out = run_cli(
        "train",
        *TINY,
        "data=text_files",
        "data.tokenizer.kind=pretrained",
        f"data.tokenizer.name={tokenizer}",
        f"data.source.path={corpus(tmp_path / 'corpus')}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "samples.prompts=[The]",
    )
    return out.returncode, out.stdout + out.stderr


def test_dropped_characters_are_refused_before_the_cache_is_written(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, save_metaspace_bpe(tmp_path / "nounk", unk=False))
    assert code == 1, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    assert "holds 2 characters the tokenizer drops" in line, line
    assert "'ö', '\\n'" in line, line  # in order of first use; " " ("▁") is not among them
    assert "document 1 of the train split" in line, line
    assert "data.tokenizer.kind=bpe" in line, line
    cache = tmp_path / "data" / "cache"
    assert not list(cache.glob("*/meta.json")) and not list(cache.glob("**/*.bin"))


def test_unknown_token_characters_train_with_a_warning(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, save_metaspace_bpe(tmp_path / "withunk", unk=True))
    assert code == 0, stderr[-3000:]
    warning = [line for line in stderr.splitlines() if "as its unknown token" in line]
    assert len(warning) == 1, stderr[-3000:]
    assert "2 characters of the corpus as its unknown token '<unk>': '\\n', 'ö'" in warning[0]


def test_worker_processes_refuse_too(tmp_path: Path) -> None:
    """The error crosses the pool by pickling, naming the document of a later chunk."""
    from lmtrain.data.dropped_characters import DroppedCharactersError  # new with the fix

    folder = save_metaspace_bpe(tmp_path / "nounk", unk=False)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pieces = [Piece("train", line, True) for line in LINES[:50]] + [Piece("train", "a dög", True)]
    paths = {split: tmp_path / f"{split}.bin" for split in ("train", "val")}
    with pytest.raises(DroppedCharactersError) as caught:
        encode.encode_corpus(
            pieces, tokenizer.to_str(), 0, np.dtype("uint16"), paths, workers=2, chunk_bytes=500
        )
    assert caught.value.characters == ["ö"]
    assert "document 51 of the train split" in str(caught.value)


def test_byte_level_tokenizers_skip_the_check(tmp_path: Path) -> None:
    from lmtrain.data.dropped_characters import CharacterCheck  # new with the fix

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(LINES, trainer)
    check = CharacterCheck(tokenizer, tokenizer.to_str())
    assert check.anchor is None
    check(["dög 😀\n"], [True], "train", 0)  # nothing tried, nothing raised
    assert not check.known


# rev_diff23b: whitespace a pre-tokenizer splits away on purpose was called dropped, and the
# message said "no unknown token" of a tokenizer with one.


def save_quicktour_bpe(folder: Path) -> Path:
    """The tokenizers quicktour's tokenizer: BPE with unknown token "[UNK]", NFKC, Whitespace."""
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]", "[EOS]"])
    tokenizer.train_from_iterator(LINES, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="[EOS]")
    fast.save_pretrained(folder)
    return folder


def save_word_level(folder: Path) -> Path:
    """A WordLevel tokenizer with unknown token "[UNK]" and a WhitespaceSplit pre-tokenizer."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(
        LINES, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"])
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="[EOS]")
    fast.save_pretrained(folder)
    return folder


def test_the_quicktour_tokenizer_trains_naming_only_its_unknown_characters(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, save_quicktour_bpe(tmp_path / "quicktour"))
    assert code == 0, stderr[-3000:]
    assert "error:" not in stderr, stderr[-3000:]
    warning = [line for line in stderr.splitlines() if "as its unknown token" in line]
    assert len(warning) == 1, stderr[-3000:]
    assert "1 character of the corpus as its unknown token '[UNK]': 'ö'" in warning[0]


def test_a_word_level_tokenizer_splitting_on_whitespace_trains(tmp_path: Path) -> None:
    code, stderr = train(tmp_path, save_word_level(tmp_path / "wordlevel"))
    assert code == 0, stderr[-3000:]
    assert "error:" not in stderr and "drops without a trace" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("kind", ["Whitespace", "WhitespaceSplit", "BertPreTokenizer"])
def test_whitespace_a_pre_tokenizer_removes_is_not_dropped(kind: str) -> None:
    """A BPE with no unknown token still drops "ö", which alone is named."""
    from lmtrain.data.dropped_characters import CharacterCheck, DroppedCharactersError

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = getattr(pre_tokenizers, kind)()
    tokenizer.train_from_iterator(LINES, trainers.BpeTrainer(vocab_size=120))
    check = CharacterCheck(tokenizer, tokenizer.to_str())
    check(["a b\tc\nd\xa0e"], [True], "train", 0)  # whitespace, split away by design
    with pytest.raises(DroppedCharactersError) as caught:
        check(["the lazy dög\n"], [True], "train", 0)
    assert caught.value.characters == ["ö"]
    assert "(it has no unknown token and no byte fallback)" in str(caught.value)


def test_the_error_says_what_the_tokenizer_has() -> None:
    """A byte-level BPE trained without the whole byte alphabet drops the bytes it never saw;
    the message names its byte coverage, also after crossing a worker pool by pickling."""
    from lmtrain.data.dropped_characters import CharacterCheck, DroppedCharactersError

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(LINES, trainers.BpeTrainer(vocab_size=120))
    count = sum(c in tokenizer.get_vocab() for c in pre_tokenizers.ByteLevel.alphabet())
    check = CharacterCheck(tokenizer, tokenizer.to_str())
    with pytest.raises(DroppedCharactersError) as caught:
        check(["a dög"], [True], "train", 0)
    sent = pickle.loads(pickle.dumps(caught.value))
    for error in (caught.value, sent):
        assert error.characters == ["ö"]
        has = f"no unknown token and a ByteLevel pre-tokenizer with {count} of the 256 byte"
        assert f"(it has {has} characters)" in str(error), str(error)
