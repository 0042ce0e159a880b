"""Which characters of a text a tokenizer cannot encode, and the error that names them.

The char tokenizer has no unknown token on purpose (a character outside its corpus must not
silently become another one), so text it has never seen makes the Rust tokenizer raise a bare
`Exception` ("WordLevel error: Missing [UNK] token") that names no character. The token cache,
the samples callback and `lmtrain.generate` turn that into one line naming the characters.
Imports nothing heavy: the tokenizer worker processes use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmtrain.errors import LMTrainError

# Characters named in a message; the rest are counted.
SHOWN = 8
# Characters of surrounding text shown on each side of the first unencodable one.
EXCERPT_CHARS = 20


def unencodable_characters(encode: Callable[[str], Any], text: str) -> list[str]:
    """The characters of `text` that `encode` raises on by themselves, in order of first use.

    Tokenizers say only that encoding failed; trying each distinct character alone finds the ones
    to blame (exactly, for the char tokenizer). Only called once encoding has failed.
    """
    missing = []
    for char in dict.fromkeys(text):
        try:
            encode(char)
        except Exception:  # the Rust tokenizer raises a bare Exception
            missing.append(char)
    return missing


def format_characters(characters: Sequence[str]) -> str:
    """`'R', 'O', 'M', 'E'`: repr shows invisible ones ('\\xa0', '\\u200b') for what they are."""
    shown = ", ".join(repr(c) for c in characters[:SHOWN])
    more = len(characters) - SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def excerpt(text: str, index: int) -> str:
    """The text around `index`, to grep the corpus for."""
    return text[max(0, index - EXCERPT_CHARS) : index + EXCERPT_CHARS + 1]


class UnencodableTextError(LMTrainError):
    """Text holds characters the tokenizer has no token for.

    Raised in a tokenizer worker and sent to the parent by pickling: `__reduce__` rebuilds it from
    its own arguments, so it arrives as itself, message included.
    """

    def __init__(self, characters: Sequence[str], context: str, reason: str = "") -> None:
        self.characters = list(characters)
        self.context = context
        self.reason = reason
        super().__init__(f"the corpus {self.problem()}: {self.fix()}")

    def fix(self) -> str:
        """What to do instead, for the one line of the corpus check."""
        return (
            "train on text the tokenizer covers, or use a byte-level BPE tokenizer "
            "(data.tokenizer.kind=bpe), which encodes any text"
        )

    def problem(self) -> str:
        """What cannot be encoded, for callers that name the text and the fix themselves."""
        if not self.characters:
            return f"holds text the tokenizer cannot encode ({self.reason})"
        return (
            f"holds characters the tokenizer cannot encode: {format_characters(self.characters)} "
            f"(the first in {self.context!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.characters, self.context, self.reason)


def explain_failure(
    encode: Callable[[str], Any], texts: Sequence[str], err: Exception
) -> UnencodableTextError:
    """The error for the first of `texts` with characters `encode` rejects, raised by the caller.

    When no single character is to blame (a tokenizer of whole words, say), the tokenizer's own
    message stands in for the characters.
    """
    for text in texts:
        characters = unencodable_characters(encode, text)
        if characters:
            return UnencodableTextError(characters, excerpt(text, text.index(characters[0])))
    return UnencodableTextError([], "", str(err).strip() or type(err).__name__)
