"""Tokenizers: a character-level or byte-level BPE one built from the corpus, or a pretrained one.

Every tokenizer ends up as a `transformers.PreTrainedTokenizerFast` with an end-of-text token as
its `eos_token`, so the rest of the code (token cache, model, generation, export) sees one type
that saves with `save_pretrained` and reloads with `AutoTokenizer.from_pretrained`. The models are
built with the `tokenizers` library; the only thing written here is how its parts are wired.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data.corpus import MB, Source
from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.checks import Problems

EOS_TOKEN = "<|endoftext|>"
# 256 byte symbols plus the end-of-text token: the smallest byte-level vocabulary.
MIN_BPE_VOCAB_SIZE = 257
# 2**20: four times the largest published vocabularies (Gemma's 262,144), far inside what uint32
# token files hold. The BPE trainer allocates ~57 bytes per vocabulary entry up front, so an
# unbounded value (5e9) aborts in Rust with no error line; 2**20 needs ~60 MB.
MAX_BPE_VOCAB_SIZE = 2**20
# The files of a local folder that define what AutoTokenizer loads, so its tokens: the vocabulary
# and merges, the special tokens (the eos token separates documents) and config.json, whose
# model_type picks the tokenizer class when tokenizer_config.json names none.
TOKENIZER_DEFINING_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "config.json",
)
# Longest run of letters, digits, punctuation or spaces that BPE sees as one pre-token (below).
MAX_PRETOKEN_CHARS = 64
# GPT-2's pre-tokenizer regex (tokenizers' ByteLevel) with each run bounded to that many characters.
_RUN = f"{{1,{MAX_PRETOKEN_CHARS}}}"
BOUNDED_GPT2_PATTERN = (
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}{_RUN}| ?\p{{N}}{_RUN}| ?[^\s\p{{L}}\p{{N}}]{_RUN}"
    rf"|\s{_RUN}(?!\S)|\s{_RUN}"
)


@dataclass(frozen=True)
class TokenizerSettings:
    """`data.tokenizer`, typed: the kind, and the settings only some kinds read.

    `vocab_size` and `train_sample_mb` (MB of train text to learn from; None: all of it) are
    BPE's; `name` (hub id or folder) is a pretrained tokenizer's. What each kind does lives in
    `KINDS`: adding a kind is one entry there.
    """

    kind: str
    vocab_size: int | None = None
    train_sample_mb: float | None = None
    name: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TokenizerSettings:
        """The settings of a `data.tokenizer` mapping, after `check_tokenizer_config` passed."""
        return cls(**{f.name: config.get(f.name) for f in fields(cls)})

    @property
    def spec(self) -> TokenizerKind:
        return KINDS[self.kind]

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the tokens (for the token cache's fingerprint): unused keys
        never force a rebuild."""
        return {"kind": self.kind, **self.spec.fingerprint(self)}

    def training_text(self, source: Source) -> Iterator[str]:
        """What the tokenizer learns from (a sample of train text, all text, or nothing)."""
        return self.spec.training_text(self, source)

    def build(self, texts: Iterable[str]) -> PreTrainedTokenizerFast:
        """The tokenizer, learned from `texts` (see `training_text`) when the kind learns."""
        return self.spec.build(self, texts)


@dataclass(frozen=True)
class TokenizerKind:
    """What one `data.tokenizer.kind` does; see `KINDS`."""

    build: Callable[[TokenizerSettings, Iterable[str]], PreTrainedTokenizerFast]
    training_text: Callable[[TokenizerSettings, Source], Iterator[str]]
    fingerprint: Callable[[TokenizerSettings], dict[str, Any]]
    check: Callable[[TokenizerSettings, Problems], None]


def check_tokenizer_config(config: Mapping[str, Any], problems: Problems) -> None:
    """Record every problem of a `data.tokenizer` mapping (unknown keys, kind, its settings)."""
    known = {f.name for f in fields(TokenizerSettings)}
    if set(config) - known or "kind" not in config:
        problems.add(
            f"data.tokenizer has keys {sorted(config)}: use kind (required), vocab_size, "
            "train_sample_mb and name"
        )
        return
    if problems.choice("data.tokenizer.kind", config.get("kind"), KINDS):
        KINDS[config["kind"]].check(TokenizerSettings.from_config(config), problems)


def _all_text(settings: TokenizerSettings, source: Source) -> Iterator[str]:
    # nanoGPT builds its alphabet from the whole text too: val must be encodable.
    return (piece.text for piece in source.documents())


def _train_sample(settings: TokenizerSettings, source: Source) -> Iterator[str]:
    if settings.train_sample_mb:
        return source.sample(int(float(settings.train_sample_mb) * MB))
    return (piece.text for piece in source.documents() if piece.split == "train")


def _nothing(settings: TokenizerSettings, source: Source) -> Iterator[str]:
    return iter(())


def _check_bpe(settings: TokenizerSettings, problems: Problems) -> None:
    problems.integer(
        "data.tokenizer.vocab_size",
        settings.vocab_size,
        MIN_BPE_VOCAB_SIZE,
        maximum=MAX_BPE_VOCAB_SIZE,
    )
    problems.number(
        "data.tokenizer.train_sample_mb",
        settings.train_sample_mb,
        low=0,
        low_open=True,
        optional=True,
    )


def _check_pretrained(settings: TokenizerSettings, problems: Problems) -> None:
    if not settings.name:
        problems.add(
            f"data.tokenizer.name={settings.name!r} is empty: pass a Hugging Face hub id or a "
            "local folder for kind=pretrained"
        )


def _pretrained_fingerprint(settings: TokenizerSettings) -> dict[str, Any]:
    """The name, plus the sha256 of each file that defines a local folder's tokenizer.

    Any edit (a new eos token in tokenizer_config.json, a changed merge) rebuilds the cache, even
    one that keeps a file's size and mtime. The files are small next to the corpus (a few MB for
    the largest vocabularies), so hashing them costs milliseconds. A hub id is covered by its name.
    """
    relevant: dict[str, Any] = {"name": settings.name}
    folder = Path(str(settings.name)).expanduser()
    if settings.name and folder.is_dir():
        relevant["files"] = {
            name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in TOKENIZER_DEFINING_FILES
            if (folder / name).is_file()
        }
    return relevant


KINDS: dict[str, TokenizerKind] = {
    # One token per character of the corpus (train and val), plus end-of-text.
    "char": TokenizerKind(
        build=lambda settings, texts: char_tokenizer(texts),
        training_text=_all_text,
        fingerprint=lambda settings: {},
        check=lambda settings, problems: None,
    ),
    # Byte-level BPE learned from (a sample of) the train split.
    "bpe": TokenizerKind(
        build=lambda settings, texts: bpe_tokenizer(texts, settings.vocab_size),
        training_text=_train_sample,
        fingerprint=lambda s: {"vocab_size": s.vocab_size, "train_sample_mb": s.train_sample_mb},
        check=_check_bpe,
    ),
    # A published tokenizer: a hub id or a save_pretrained folder.
    "pretrained": TokenizerKind(
        build=lambda settings, texts: pretrained_tokenizer(settings.name),
        training_text=_nothing,
        fingerprint=_pretrained_fingerprint,
        check=_check_pretrained,
    ),
}


def char_tokenizer(docs: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character (Unicode code point), ids in sorted order, then end-of-text.

    Every character is its own pre-token (newlines and spaces included) and the decoder glues
    tokens back together with nothing in between, so decode(encode(text)) == text exactly.
    There is deliberately no unknown token: a character outside the corpus raises instead of
    silently becoming another token.
    """
    characters: set[str] = set()
    for doc in docs:
        characters.update(doc)
    alphabet = sorted(characters)
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab[EOS_TOKEN] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([EOS_TOKEN])
    return _wrap(tokenizer)


def bpe_tokenizer(train_docs: Iterable[str], vocab_size: int | None) -> PreTrainedTokenizerFast:
    """GPT-2 style byte-level BPE trained on the train docs: every byte is in the alphabet.

    No prefix space is added, so the first word of a text is encoded as written and decoding
    round-trips exactly. On a small corpus the learned vocabulary can stop short of `vocab_size`.

    GPT-2's pre-tokenizer makes one pre-token of a whole run of letters, digits, punctuation or
    spaces, and the trainer's time grows with the square of a pre-token's length (0.5 MB of "a"
    took 300 s). Its regex is used here with each run bounded to `MAX_PRETOKEN_CHARS`: words of
    real text are shorter and split as before, a longer run becomes several pre-tokens, so
    training and encoding stay linear in the text, and since a split moves no byte, decoding
    still round-trips.
    """
    if vocab_size is None or vocab_size < MIN_BPE_VOCAB_SIZE:
        raise LMTrainError(
            f"data.tokenizer.vocab_size={vocab_size!r} is too small for a byte-level BPE: use at "
            f"least {MIN_BPE_VOCAB_SIZE} (256 bytes + {EOS_TOKEN}), e.g. 4096"
        )
    if vocab_size > MAX_BPE_VOCAB_SIZE:
        raise LMTrainError(
            f"data.tokenizer.vocab_size={vocab_size!r} is too large: use at most "
            f"{MAX_BPE_VOCAB_SIZE} (published tokenizers use up to 262144), e.g. 32768"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(BOUNDED_GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(train_docs, trainer=trainer)
    return _wrap(tokenizer)


def pretrained_tokenizer(name: str | None) -> PreTrainedTokenizerFast:
    """A published tokenizer (hub id or local folder), which must be fast and have an eos token.

    Fast, because the token cache encodes with the Rust backend; an eos token, because documents
    are separated by it.
    """
    if not name:
        raise LMTrainError(
            f"data.tokenizer.name={name!r} is empty: pass a Hugging Face hub id or a local folder "
            "for kind=pretrained"
        )
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        raise LMTrainError(
            f"data.tokenizer.name={name!r} is not an existing folder: pass the folder that "
            "save_pretrained wrote, or a Hugging Face hub id"
        )
    folder = Path(name).expanduser()
    if folder.is_dir():
        _check_json_objects(name, folder)
    try:
        # Never the code a folder ships: refused in one line, with no [y/N] prompt.
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except Exception as err:  # files from disk or the hub: transformers and Rust raise anything
        raise LMTrainError(
            f"data.tokenizer.name={name!r} could not be loaded ({type(err).__name__}: "
            f"{first_line(err)}): pass a folder that save_pretrained wrote (without custom "
            "code) or a valid Hugging Face hub id"
        ) from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise LMTrainError(
            f"data.tokenizer.name={name!r} is a slow tokenizer ({type(tokenizer).__name__}): pick "
            "one that ships a tokenizer.json (a fast tokenizer)"
        )
    if tokenizer.eos_token is None:
        raise LMTrainError(
            f"data.tokenizer.name={name!r} has no eos token: pick a tokenizer that defines one, "
            "it separates documents"
        )
    return tokenizer


def _check_json_objects(name: str, folder: Path) -> None:
    """Each JSON file that defines the tokenizer must hold an object: transformers indexes them
    as mappings and would fail with a TypeError deep inside (a JSON array, a number)."""
    for file in TOKENIZER_DEFINING_FILES:
        path = folder / file
        if path.suffix != ".json" or not path.is_file():
            continue
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LMTrainError(
                f"data.tokenizer.name={name!r} has an unreadable {file} ({first_line(err)}): "
                "pass a folder that save_pretrained wrote"
            ) from None
        if not isinstance(content, dict):
            raise LMTrainError(
                f"data.tokenizer.name={name!r} has a {file} that holds a "
                f"{type(content).__name__}, not an object: pass a folder that save_pretrained wrote"
            )


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of a `tokenizers` object; no clean-up, so decoding is exact."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, clean_up_tokenization_spaces=False
    )
