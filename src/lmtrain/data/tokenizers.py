"""Tokenizers: a character-level or byte-level BPE one built from the corpus, or a pretrained one.

Every tokenizer ends up as a `transformers.PreTrainedTokenizerFast` with an end-of-text token as
its `eos_token`, so the rest of the code (token cache, model, generation, export) sees one type
that saves with `save_pretrained` and reloads with `AutoTokenizer.from_pretrained`. The models are
built with the `tokenizers` library; the only thing written here is how its parts are wired.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.errors import LMTrainError

EOS_TOKEN = "<|endoftext|>"
KINDS = ("char", "bpe", "pretrained")
# 256 byte symbols plus the end-of-text token: the smallest byte-level vocabulary.
MIN_BPE_VOCAB_SIZE = 257


def build_tokenizer(
    kind: str,
    train_docs: Sequence[str],
    vocab_size: int | None = None,
    name: str | None = None,
    val_docs: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Build the tokenizer named by `data.tokenizer`.

    `vocab_size` is only used by "bpe" and `name` only by "pretrained". `val_docs` only matter to
    "char": its alphabet must contain every character of val too, or val could not be encoded
    (nanoGPT builds its alphabet from the whole text for the same reason). BPE is trained on the
    train docs only, and being byte-level it encodes any text.
    """
    if kind == "char":
        return char_tokenizer([*train_docs, *val_docs])
    if kind == "bpe":
        return bpe_tokenizer(train_docs, vocab_size)
    if kind == "pretrained":
        return pretrained_tokenizer(name)
    raise LMTrainError(f"data.tokenizer.kind={kind!r} is unknown: use one of {', '.join(KINDS)}")


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
    """
    if vocab_size is None or vocab_size < MIN_BPE_VOCAB_SIZE:
        raise LMTrainError(
            f"data.tokenizer.vocab_size={vocab_size!r} is too small for a byte-level BPE: use at "
            f"least {MIN_BPE_VOCAB_SIZE} (256 bytes + {EOS_TOKEN}), e.g. 4096"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
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
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LMTrainError(
            f"data.tokenizer.name={name!r} could not be loaded ({reason}): pass an existing local "
            "folder or a valid Hugging Face hub id"
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


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of a `tokenizers` object; no clean-up, so decoding is exact."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, clean_up_tokenization_spaces=False
    )
