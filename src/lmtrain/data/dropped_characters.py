"""Characters of the corpus a tokenizer drops without a trace, or maps to its unknown token.

A BPE model with no unknown token and no byte fallback skips the characters it has no token for,
and Hugging Face `tokenizers` raises nothing: a corpus with newlines or an "ö" the tokenizer never
saw became a cache without them, and training went on (rev_data23). `CharacterCheck` refuses such
characters while the cache is being built (it is moved into place only once complete), and
collects those that become the unknown token, which the model learns as one token for all.

Cheap on a big corpus: each chunk's text is stripped of the characters this process has judged
already (`str.translate`: about 1.5 ms per MB of ASCII text, where encoding takes some 400 ms),
and only what is left is tried, each character once. Byte-level tokenizers (GPT-2's ByteLevel
with all 256 byte characters, or byte fallback with all 256 byte tokens) cover every character
and skip the check entirely.

A character is tried between two copies of an anchor character the tokenizer covers: `a?a`
encoding to the ids of `aa` means `?` left no trace. Not alone: a SentencePiece-style tokenizer
gives any text the "▁" it prepends, and encodes " " as "▁" (which decoding may turn back into
nothing), so only the difference the character makes tells. A character the normalizer removes
on purpose (a control character under BERT's), or the pre-tokenizer splits away (whitespace under
Whitespace, WhitespaceSplit or BERT's), is the tokenizer's choice, not a loss to refuse: every
user of the tokenizer gets it (rev_diff23b: the tokenizers quicktour's BPE was refused for " ").
Imports nothing heavy: the tokenizer worker processes use it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer, pre_tokenizers

from lmtrain.data.coverage import UnencodableTextError, excerpt, format_characters

log = logging.getLogger(__name__)

# Tried first as the anchor; then every one-character token of the vocabulary.
ANCHOR_CANDIDATES = "aex0."
# What decoding makes of bytes that are not a whole character (a byte-level BPE missing a byte).
REPLACEMENT = "\ufffd"


class DroppedCharactersError(UnencodableTextError):
    """Corpus characters the tokenizer drops without raising; `reason` says where the first is,
    `fallbacks` what the tokenizer has for characters outside its vocabulary."""

    def __init__(
        self, characters: Sequence[str], context: str, reason: str = "", fallbacks: str = ""
    ) -> None:
        self.fallbacks = fallbacks or "no unknown token and no byte fallback"
        super().__init__(characters, context, reason)

    def problem(self) -> str:
        count = len(self.characters)
        return (
            f"holds {count} character{'s' if count > 1 else ''} the tokenizer drops without a "
            f"trace (it has {self.fallbacks}): {format_characters(self.characters)} (the first "
            f"in {self.reason}, at {self.context!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.characters, self.context, self.reason, self.fallbacks)

    def fix(self) -> str:
        return (
            "use a tokenizer that covers them, a byte-level BPE tokenizer "
            "(data.tokenizer.kind=bpe), or remove them from the text"
        )


class CharacterCheck:
    """Judges each new character of the corpus once: covered, unknown (kept in `unknown`), or
    dropped (raised as `DroppedCharactersError`)."""

    def __init__(self, tokenizer: Tokenizer, tokenizer_json: str) -> None:
        self.tokenizer = tokenizer
        spec = json.loads(tokenizer_json)
        self.unk_id = unknown_token_id(tokenizer, spec)
        self.fallbacks = fallbacks(tokenizer, spec)
        self.known: dict[int, None] = {}  # str.translate's table deleting the known characters
        self.unknown: set[str] = set()
        self.anchor = None if covers_every_character(tokenizer, spec) else self._find_anchor()
        self.baseline = self._ids(self.anchor * 2) if self.anchor else []

    def __call__(self, texts: Sequence[str], ends: Sequence[bool], split: str, first: int) -> None:
        """Raise if `texts` (pieces of `split` from its document number `first` on) hold a
        character the tokenizer drops; add those it maps to its unknown token to `unknown`."""
        if self.anchor is None:
            return
        new = set().union(*(text.translate(self.known) for text in texts))
        if not new:
            return
        dropped = {char for char in new if self._judge(char)}
        self.known.update(dict.fromkeys(map(ord, new - dropped)))
        if dropped:
            raise _dropped_error(dropped, texts, ends, split, first, self.fallbacks)

    def _judge(self, char: str) -> bool:
        """Whether `char` is dropped; a character mapped to the unknown token goes to `unknown`."""
        assert self.anchor is not None
        if self._removed_on_purpose(char):
            return False
        try:
            ids = self._ids(self.anchor + char + self.anchor)
        except Exception:  # a tokenizer that raises on it: the encoder names it (`coverage`)
            return False
        if self.unk_id is not None and ids.count(self.unk_id) > self.baseline.count(self.unk_id):
            self.unknown.add(char)
            return False
        if ids == self.baseline:
            return True
        return char != REPLACEMENT and REPLACEMENT in self.tokenizer.decode(ids)

    def _removed_on_purpose(self, char: str) -> bool:
        """Whether the normalizer or the pre-tokenizer takes `char` out before the model sees it:
        the pre-tokens of `a?a` hold the same text as those of `aa`. Compared whole, not searched
        for `char`: Metaspace replaces " " by "▁", which the model may still drop."""
        return self._pre_tokens(self.anchor + char + self.anchor) == self._pre_tokens(
            self.anchor * 2
        )

    def _pre_tokens(self, text: str) -> str:
        """`text` as the model receives it: normalized, and its pre-tokens joined."""
        normalizer, pre_tokenizer = self.tokenizer.normalizer, self.tokenizer.pre_tokenizer
        text = normalizer.normalize_str(text) if normalizer is not None else text
        if pre_tokenizer is None:
            return text
        return "".join(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text))

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _find_anchor(self) -> str | None:
        """A character the tokenizer encodes, without its unknown token, each copy adding ids."""
        singles = sorted(
            token for token in self.tokenizer.get_vocab(with_added_tokens=False) if len(token) == 1
        )
        for char in dict.fromkeys([*ANCHOR_CANDIDATES, *singles]):
            try:
                one, two = self._ids(char), self._ids(char * 2)
            except Exception:  # the char tokenizer raises on characters it does not have
                continue
            if one and two != one and self.unk_id not in two:
                return char
        return None  # no character to try others against: the check is skipped


def unknown_token_id(tokenizer: Tokenizer, spec: dict[str, Any]) -> int | None:
    """The id of the model's unknown token (`unk_token` of BPE, WordPiece, WordLevel; `unk_id`
    of Unigram), or None when it has none."""
    model = spec.get("model") or {}
    if isinstance(model.get("unk_id"), int):
        return int(model["unk_id"])
    token = model.get("unk_token")
    return tokenizer.token_to_id(token) if isinstance(token, str) else None


def fallbacks(tokenizer: Tokenizer, spec: dict[str, Any]) -> str:
    """What the tokenizer has for characters outside its vocabulary, for the error: "no unknown
    token and no byte fallback", or the unknown token and the share of the byte tokens it has."""
    model = spec.get("model") or {}
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    unk_id = unknown_token_id(tokenizer, spec)
    if unk_id is not None:
        unknown = f"the unknown token {tokenizer.id_to_token(unk_id)!r}"
    else:
        unknown = "no unknown token"
    if model.get("byte_fallback"):
        count = sum(f"<0x{byte:02X}>" in vocab for byte in range(256))
        return f"{unknown} and byte fallback with {count} of the 256 byte tokens"
    if _has_byte_level(spec.get("pre_tokenizer")):
        count = sum(char in vocab for char in pre_tokenizers.ByteLevel.alphabet())
        return f"{unknown} and a ByteLevel pre-tokenizer with {count} of the 256 byte characters"
    return f"{unknown} and no byte fallback"


def covers_every_character(tokenizer: Tokenizer, spec: dict[str, Any]) -> bool:
    """Whether every character reaches the model as bytes it has tokens for: a ByteLevel
    pre-tokenizer with all 256 byte characters in the vocabulary, or byte fallback with all 256
    byte tokens."""
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    if _has_byte_level(spec.get("pre_tokenizer")):
        return all(char in vocab for char in pre_tokenizers.ByteLevel.alphabet())
    if (spec.get("model") or {}).get("byte_fallback"):
        return all(f"<0x{byte:02X}>" in vocab for byte in range(256))
    return False


def _has_byte_level(pre_tokenizer: Any) -> bool:
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(part) for part in pre_tokenizer.get("pretokenizers") or [])


def _dropped_error(
    dropped: set[str],
    texts: Sequence[str],
    ends: Sequence[bool],
    split: str,
    first: int,
    fallbacks: str,
) -> DroppedCharactersError:
    """The error naming `dropped` in order of first use, and the document that holds the first."""
    document = first
    for text, end in zip(texts, ends, strict=True):
        positions = [i for i in (text.find(char) for char in dropped) if i >= 0]
        if positions:
            at = min(positions)
            rest = sorted(dropped, key=lambda c: (c not in text, text.find(c), c))
            where = f"document {document + 1} of the {split} split"
            return DroppedCharactersError(rest, excerpt(text, at), where, fallbacks)
        document += end
    return DroppedCharactersError(sorted(dropped), "", f"the {split} split", fallbacks)


class UnknownTally:
    """Counts the unknown tokens of the cache and the characters they stand for, to say once,
    after encoding, what the model will learn as one token."""

    def __init__(self, tokenizer_json: str) -> None:
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.unk_id = unknown_token_id(self.tokenizer, json.loads(tokenizer_json))
        self.tokens = self.unknown_tokens = 0
        self.characters: set[str] = set()

    def add(self, ids: np.ndarray, characters: set[str]) -> None:
        self.tokens += int(ids.size)
        if self.unk_id is not None:
            self.unknown_tokens += int(np.count_nonzero(ids == self.unk_id))
        self.characters |= characters

    def warn(self) -> None:
        if not self.unknown_tokens or self.unk_id is None:
            return
        shown = sorted(self.characters)
        log.warning(
            "The tokenizer encodes %d character%s of the corpus as its unknown token %r%s "
            "(%s of the cache's %s tokens); the model learns them as one token and can never "
            "write them: use a tokenizer that covers them, a byte-level BPE tokenizer "
            "(data.tokenizer.kind=bpe), or remove them from the text",
            len(shown),
            "s" if len(shown) > 1 else "",
            self.tokenizer.id_to_token(self.unk_id),
            f": {format_characters(shown)}" if shown else " (whole words, not characters)",
            f"{self.unknown_tokens:,}",
            f"{self.tokens:,}",
        )
