"""Tokenizers: a character-level or byte-level BPE one built from the corpus, or a pretrained one.

Every tokenizer ends up as a `transformers.PreTrainedTokenizerFast` with an end-of-text token as
its `eos_token`, so the rest of the code (token cache, model, generation, export) sees one type
that saves with `save_pretrained` and reloads with `AutoTokenizer.from_pretrained`. The models are
built with the `tokenizers` library; the only thing written here is how its parts are wired.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmtrain.data.corpus import MB, Source
from lmtrain.data.pretrained_tokenizer import (
    check_pretrained,
    pretrained_fingerprint,
    pretrained_tokenizer,
)
from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import Problems

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
# 256 byte symbols plus the end-of-text token: the smallest byte-level vocabulary.
MIN_BPE_VOCAB_SIZE = 257
# 2**20: four times the largest published vocabularies (Gemma's 262,144), far inside what uint32
# token files hold. The BPE trainer allocates ~57 bytes per vocabulary entry up front, so an
# unbounded value (5e9) aborts in Rust with no error line; 2**20 needs ~60 MB.
MAX_BPE_VOCAB_SIZE = 2**20
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
        """The settings of a `data.tokenizer` mapping, after `check_tokenizer_config` passed.

        A path object for `name` (from Python) is kept as its text: meta.json and the fingerprint
        write the settings as JSON, which has no path type.
        """
        settings = {f.name: config.get(f.name) for f in fields(cls)}
        if isinstance(settings["name"], os.PathLike):
            settings["name"] = os.fspath(settings["name"])
        return cls(**settings)

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
    known = [f.name for f in fields(TokenizerSettings)]
    unknown = sorted(set(config) - set(known))
    for key in unknown:  # each named, with the setting it most likely meant
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"use {', '.join(known)}"
        problems.add(f"data.tokenizer.{key} is not a tokenizer setting: {hint}")
    if "kind" not in config:
        problems.add("data.tokenizer has no kind: pass data.tokenizer.kind=char, bpe or pretrained")
    if unknown or "kind" not in config:
        return
    if problems.choice("data.tokenizer.kind", config.get("kind"), KINDS):
        KINDS[config["kind"]].check(TokenizerSettings.from_config(config), problems)
    name = config.get("name")
    if config.get("kind") in ("char", "bpe") and name not in (None, ""):
        # It trained its own tokenizer, and the run looked as if it used the named one.
        problems.add(
            f"data.tokenizer.name={name!r} is read only with data.tokenizer.kind=pretrained, "
            f"and kind is {config['kind']}: add data.tokenizer.kind=pretrained to use it, or "
            "leave name out"
        )


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
    sample_mb = settings.train_sample_mb
    positive = problems.number(
        "data.tokenizer.train_sample_mb", sample_mb, low=0, low_open=True, optional=True
    )
    if positive and sample_mb is not None and int(float(sample_mb) * MB) < 1:
        # `_train_sample` reads int(MB * value) bytes: none was a ZeroDivisionError in `sample`.
        problems.add(
            f"data.tokenizer.train_sample_mb={sample_mb!r} is below one byte: pass e.g. 256, "
            "or null for all the text"
        )


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
        fingerprint=pretrained_fingerprint,
        check=check_pretrained,
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
    learned = tokenizer.get_vocab_size()
    if learned < vocab_size:  # the model is sized by what was learned
        log.warning(
            "The BPE learned %d tokens, short of data.tokenizer.vocab_size=%d: the corpus has no "
            "more merges to make; the model's vocabulary is %d",
            learned,
            vocab_size,
            learned,
        )
    return _wrap(tokenizer)


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of a `tokenizers` object; no clean-up, so decoding is exact."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, clean_up_tokenization_spaces=False
    )
