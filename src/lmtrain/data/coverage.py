"""Which characters of a text a tokenizer cannot encode, and the error that names them.

The char tokenizer has no unknown token on purpose (a character outside its corpus must not
silently become another one), so text it has never seen makes the Rust tokenizer raise a bare
`Exception` ("WordLevel error: Missing [UNK] token") that names no character. The token cache,
the samples callback and `lmtrain.generate` turn that into one line naming the characters. For
the corpus, a tokenizer of whole words gets the words instead (every letter fails alone there),
and a word cut in two by the train/val split of one text file is named as such.
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


class UnencodableWordsError(UnencodableTextError):
    """Whole words the tokenizer has no token for, while their characters are not to blame (a
    tokenizer of whole words without an unknown token); `cut` says what word the first is a part of.

    A single text file is split into train and val by characters (nanoGPT's convention), so the
    split can cut a word in two, and a word-level vocabulary need not have either part: that cut,
    not the corpus, is then what the user must change, and the line says so.
    """

    def __init__(self, words: Sequence[str], context: str, reason: str = "", cut: str = "") -> None:
        self.cut = cut
        super().__init__(words, context, reason)

    def problem(self) -> str:
        first = self.characters[0]
        if self.cut:
            return (
                f"holds {first!r}, {self.cut} (at {self.context!r}; the tokenizer says: "
                f"{self.reason}): one text file is split into train and val by characters, "
                "which can cut a word in two, and the tokenizer has no token for the part"
            )
        return (
            f"holds words the tokenizer cannot encode: {format_characters(self.characters)} "
            f"(the first in {self.context!r}; the tokenizer says: {self.reason})"
        )

    def fix(self) -> str:
        if self.cut:
            return (
                "give the corpus as several files or a .jsonl file, whose documents go to train "
                "or val whole, or another data.source.val_fraction (the cut moves), or a "
                "tokenizer with an unknown token, or data.tokenizer.kind=bpe"
            )
        return (
            "train on text the tokenizer covers, or use a tokenizer with an unknown token or a "
            "byte-level BPE tokenizer (data.tokenizer.kind=bpe), which encodes any text"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.characters, self.context, self.reason, self.cut)


def encoding_failure(encode: Callable[[str], Any], text: str) -> str | None:
    """The tokenizer's own message when `encode` raises on `text`, None when it encodes it."""
    try:
        encode(text)
    except Exception as err:  # the Rust tokenizer raises a bare Exception
        return str(err).strip() or type(err).__name__
    return None


def explain_failure(
    encode: Callable[[str], Any], texts: Sequence[str], err: Exception
) -> UnencodableTextError:
    """The error for the first of `texts` that `encode` rejects, raised by the caller.

    A batch fails as a whole, so each text is tried alone, and the one that fails is named.
    """
    for text in texts:
        reason = encoding_failure(encode, text)
        if reason is not None:
            return explain_text(encode, text, texts, reason)
    return UnencodableTextError([], "", str(err).strip() or type(err).__name__)


def explain_text(
    encode: Callable[[str], Any], text: str, texts: Sequence[str], reason: str
) -> UnencodableTextError:
    """Why `encode` rejects `text`: its characters when they are to blame, else its words.

    A character that fails alone is to blame only if no word that encodes holds it: under a
    vocabulary of whole words every letter fails alone, though the words made of them encode.
    The whitespace-separated words of all `texts` are the evidence, and each failing word of
    `text` must encode once the blamed characters are taken out. Otherwise the failing words are
    named (a word cut in two first, see `cut_word`) with the tokenizer's own message.
    """
    words = dict.fromkeys(word for piece in texts for word in piece.split())
    rejected = {word for word in words if encoding_failure(encode, word) is not None}
    encodable = [word for word in words if word not in rejected]
    known = {char for word in encodable for char in word}
    characters = [char for char in unencodable_characters(encode, text) if char not in known]
    failing = [word for word in dict.fromkeys(text.split()) if word in rejected]
    if characters and all(encodes_without(encode, word, set(characters)) for word in failing):
        return UnencodableTextError(characters, excerpt(text, text.index(characters[0])))
    if not failing:
        return UnencodableTextError([], "", reason)
    cut = cut_word(text, failing, encodable)
    if cut is None:
        return UnencodableWordsError(failing, excerpt(text, text.index(failing[0])), reason)
    piece, what, at = cut
    failing = [piece, *(word for word in failing if word != piece)]
    return UnencodableWordsError(failing, excerpt(text, at), reason, what)


def encodes_without(encode: Callable[[str], Any], word: str, characters: set[str]) -> bool:
    """Whether `word` encodes once `characters` are taken out (or nothing is left of it)."""
    return encoding_failure(encode, "".join(c for c in word if c not in characters)) is None


def cut_word(
    text: str, failing: Sequence[str], encodable: Sequence[str]
) -> tuple[str, str, int] | None:
    """(piece, what it is, where) when a failing word ends `text` and begins a word that encodes,
    or starts `text` and ends one: a word cut in two at the edge of the text; None otherwise."""
    words = text.split()
    if not words:
        return None
    last, first = words[-1], words[0]
    if not text[-1].isspace() and last in failing:
        whole = next((word for word in encodable if word.startswith(last)), None)
        if whole is not None:
            where = f"the end of a piece of text and the start of the word {whole!r}"
            return last, where, len(text) - len(last)
    if not text[0].isspace() and first in failing:
        whole = next((word for word in encodable if word.endswith(first)), None)
        if whole is not None:
            where = f"the start of a piece of text and the end of the word {whole!r}"
            return first, where, 0
    return None
