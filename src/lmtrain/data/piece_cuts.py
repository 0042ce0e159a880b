r"""Where a long document may be cut into pieces so that encoding the pieces one by one gives the
ids of encoding it whole, and the one warning for documents that offer no such place.

A cut is safe for a tokenizer when its pre-tokenizer starts a pre-token there and the text on
either side pre-tokenizes alone as it does in the whole. For GPT-2's regex
`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` (byte-level
BPE, the corpus-trained BPE with its runs bounded) these are, in the order tried:

1. `PIECE_CUT`, just after a newline between two non-space characters: the newline is a
   pre-token of its own (`\s+(?!\S)` fails before a non-space, `\s+` takes the one newline).
2. `SPACE_CUT`, just before a space between two non-space characters: the space starts a
   pre-token (` ?\p{L}+` and its kin), as it does for Llama 3's regex and SentencePiece.
3. `WHITESPACE_CUT`, just before whitespace that follows a non-space character: no pre-token runs
   from a non-space into whitespace, and the text after the cut has no lookbehind to miss.
   Llama 3's regex glues newlines to punctuation (`.\n\n`), so it is only the last resort.

Not safe: just after whitespace that ends in a newline (`para.\n\n|para`): whole, `\s+(?!\S)`
leaves the last newline to a pre-token of its own; alone, the left piece ends in one `\n\n`.
The char tokenizer breaks everywhere; SentencePiece-style tokenizers re-cut the pieces before
a space (`corpus_tokenizer.recut_pieces`). Text with none of the three (minified JSON, base64)
within four blocks is cut where it is: the token cache's build counts those documents in one
warning, unless its tokenizer breaks everywhere (`breaks_everywhere`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

log = logging.getLogger(__name__)

# A newline with a non-space character on both sides: the cut every tokenizer that breaks at
# newlines shares (`corpus_tokenizer.choose_cut_plan` probes it), so it is tried first.
PIECE_CUT = re.compile(r"(?<=\S)\n(?=\S)")
# Just before a space with a non-space character on both sides.
SPACE_CUT = re.compile(r"(?<=\S)(?= \S)")
# Just before whitespace (a newline, a tab, a run of spaces) that follows a non-space character.
WHITESPACE_CUT = re.compile(r"(?<=\S)(?=\s)")
# Tried in this order where a text of four blocks holds no `PIECE_CUT`.
FALLBACK_CUTS = (SPACE_CUT, WHITESPACE_CUT)
# Characters from the end of a text searched first for a cut; each miss searches 4 times more.
CUT_WINDOW = 4096
# Blocks joined while looking for a `PIECE_CUT` before the fallbacks are tried.
MAX_BLOCKS = 4

# Letters, digits, punctuation, spaces, tabs, blank lines and CJK: a tokenizer whose pre-tokenizer
# isolates each of these characters isolates every character (`breaks_everywhere`).
EVERYWHERE_PROBE = "Ab1, c;{x}=42\n\n\tz  日本語。.."


@dataclass
class ForcedCuts:
    """Documents cut where they were (no safe place in four blocks), each counted once."""

    documents: int = 0


# The counter of the build that is reading now (`counting_forced_cuts`), or None: not counted.
_counting: ContextVar[ForcedCuts | None] = ContextVar("lmtrain_forced_cuts", default=None)


@contextlib.contextmanager
def counting_forced_cuts() -> Iterator[ForcedCuts]:
    """Count the documents that `cut_pieces` cuts where they were while the block runs.

    Per build, not per process: a source read twice (the tokenizer's sample, a first pass that
    only counts characters) or another thread's build would otherwise add to the count. A
    context variable, so only the reads this block's thread makes count; encoding workers only
    encode the pieces the parent cut, so the parent's count is the whole build's.
    """
    counter = ForcedCuts()
    token = _counting.set(counter)
    try:
        yield counter
    finally:
        _counting.reset(token)


def cut_pieces(blocks: Iterable[str], block_chars: int) -> Iterator[str]:
    """Re-cut a stream of text blocks into pieces that end where tokenizers break tokens anyway.

    A block with no `PIECE_CUT` is carried over and joined to the next; after four blocks without
    one, the last `FALLBACK_CUTS` place is taken, and failing that (minified text, say) the text is
    cut where it is, the only place ids can differ, and the document is counted once.
    """
    forced = False
    carry = ""
    blocks = iter(blocks)
    block = next(blocks, None)
    while block is not None:
        following = next(blocks, None)
        text = carry + block if carry else block
        if following is None:  # the last block: nothing to cut
            yield text
            return
        block = following
        cut = last_cut(text)
        if cut is None and len(text) >= MAX_BLOCKS * block_chars:
            cut = fallback_cut(text)
            if cut is None:
                cut = len(text)
                counter = _counting.get()
                if not forced and counter is not None:  # once a document, however many cuts
                    counter.documents += 1
                forced = True
        if cut is None:
            carry = text
            continue
        carry = text[cut:]
        yield text[:cut]


def fallback_cut(text: str) -> int | None:
    """The last place of the first of `FALLBACK_CUTS` that `text` holds, or None."""
    for pattern in FALLBACK_CUTS:
        cut = last_cut(text, pattern)
        if cut is not None:
            return cut
    return None


def last_cut(text: str, pattern: re.Pattern[str] = PIECE_CUT, most: int = 0) -> int | None:
    """Where the last match of `pattern` ends (by default: after the last cut newline), or None
    (a `text` of `most` characters or more without one: its end, where it is cut anyway).

    Searched by a regex in windows growing from the end: usually a cut is near the end, and a
    text of nothing but newlines costs a linear scan, not a Python step per newline.
    """
    window = CUT_WINDOW
    while True:
        start = max(0, len(text) - window)
        last = None
        for last in pattern.finditer(text, start):  # noqa: B007 (only the last one counts)
            pass
        if last is not None:
            return last.end()
        if start == 0:
            return len(text) if most and len(text) >= most else None
        window *= 4


def breaks_everywhere(tokenizer: Tokenizer) -> bool:
    """Whether every character is a pre-token of its own (the char tokenizer): then a cut
    anywhere gives the whole text's ids, and a forced cut is nothing to warn of. A normalizer
    could join characters across a cut (NFC), so a tokenizer with one does not qualify."""
    pre_tokenizer = tokenizer.pre_tokenizer
    if pre_tokenizer is None or tokenizer.normalizer is not None:
        return False
    pieces = pre_tokenizer.pre_tokenize_str(EVERYWHERE_PROBE)
    return all(len(piece) == 1 for piece, _ in pieces)


def warn_forced_cuts(forced: int, source: Any, tokenizer: Tokenizer) -> None:
    """One warning counting the `forced` documents of `source` the token cache's build cut where
    they were (no safe place in four blocks): silently, their ids differed from the whole text's.
    None for a tokenizer that `breaks_everywhere`: its ids cannot differ, and raising
    block_chars, as the warning advises, would change nothing."""
    if not forced or breaks_everywhere(tokenizer):
        return
    setting = source.typed_as if source.typed_as.startswith("+") else f"+{source.typed_as}"
    log.warning(
        "%d document(s) of %s had %d x %s.block_chars characters with no newline or space "
        "next to another character (minified text, say), so each was cut there: its ids "
        "may differ from the whole text's by a token or two at such a cut; pass "
        "%s.block_chars=<n> larger than the longest document to encode each whole",
        forced,
        source.describe(),
        MAX_BLOCKS,
        source.typed_as,
        setting,
    )
