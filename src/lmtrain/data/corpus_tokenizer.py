"""The tokenizer as the token cache runs it on corpus text: plain text, and pieces it reads whole.

Sources cut a big document into pieces after a newline between two non-space characters
(`corpus.cut_pieces`), and the encoder encodes each piece on its own. That gives the ids of the
whole document only where the tokenizer breaks tokens at the cut anyway: GPT-2-style byte-level
BPE, the char tokenizer and the corpus-trained BPE do. A SentencePiece-style tokenizer (Metaspace
with prepend_scheme first or always: Llama, Mistral, Gemma) does not: it prepends "▁" to every
piece, and its words run across newlines. It breaks tokens before a space instead, so for it the
pieces are re-cut there (`recut_pieces`); where a normalizer prepends "▁" even to a piece that
starts with a space, a continuation piece is encoded after a short prefix whose ids are dropped.

Which `CutPlan` a tokenizer gets is found by encoding probe texts whole and in two pieces
(`choose_cut_plan`), once per cache build: a few milliseconds, and the plan of the tokenizers that
break at newlines is the sources' pieces as they are, so their encoding does no extra work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tokenizers import Tokenizer

from lmtrain.data.corpus import BLOCK_CHARS, Piece, last_cut
from lmtrain.errors import LMTrainError

log = logging.getLogger(__name__)

# Just before a space with a non-space character on both sides: a SentencePiece-style tokenizer
# starts a token there ("▁word"), and a piece that starts with the space gets no extra "▁".
SPACE_CUT = re.compile(r"(?<=\S)(?= \S)")
# Encoded before a continuation piece and dropped, for normalizers that prepend "▁" to any text.
CONTINUATION_PREFIX = "a"
# In the fingerprint of every pretrained tokenizer's cache (`pretrained_fingerprint`): caches built
# before the cut plans cut SentencePiece-style tokenizers' documents after newlines.
CUTS_VERSION = 2
# (first piece, continuation) pairs cut the way each plan cuts, covering letters, digits,
# punctuation, code and non-Latin scripts; a probe the tokenizer cannot encode is skipped.
NEWLINE_PROBES = (
    ("First Citizen:\n", "Before we proceed any further, hear me speak."),
    ("x = compute(1)\n", "= value  # done"),
    ("Ende.\n", "Wörter über 42 Zeilen."),
    ("日本語の文章。\n", "次の行です。"),
)
SPACE_PROBES = (
    ("First Citizen:\nBefore we", " proceed any further, hear me speak."),
    ("x = compute(1)", " + value  # done"),
    ("Ende der", " Wörter über 42 Zeilen."),
    ("日本語の", " 次の行です。"),
)


@dataclass(frozen=True)
class CutPlan:
    """Where a document may be cut for one tokenizer: `pattern` None keeps the sources' pieces;
    `prefix` is encoded before each continuation piece, then its ids are dropped."""

    name: str
    pattern: re.Pattern[str] | None = None
    prefix: str = ""


NEWLINE = CutPlan("after a newline")
PLANS = (
    NEWLINE,
    CutPlan("before a space", SPACE_CUT),
    CutPlan("before a space, after a prefix", SPACE_CUT, CONTINUATION_PREFIX),
)


def plain_text_tokenizer(tokenizer_json: str) -> Tokenizer:
    """The tokenizer that reads corpus text as plain text: a special token's spelling in the text
    (`<|endoftext|>` in code, docs or chat logs) is encoded as its characters, not as the token.

    Otherwise every mention of the marker would become a fake document boundary; tiktoken's
    `encode_ordinary` and nanoGPT do the same. The one real end-of-text per document is appended
    by id. Non-special added tokens still match, as they are ordinary vocabulary.
    """
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.encode_special_tokens = True
    # A tokenizer.json's truncation and padding are for model inputs: they cut or padded the corpus.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def choose_cut_plan(tokenizer_json: str) -> CutPlan:
    """The first plan of `PLANS` under which every probe encodes in pieces as it does whole.

    The newline plan also needs the pre-tokenizer to end a pre-token at each probe's cut, since
    a vocabulary learned across newlines could merge there on text no probe holds. None fitting
    (a tokenizer that breaks tokens nowhere), the sources' cuts are kept with a warning: the ids
    may then differ from the whole text's at a cut, about once per 256k characters.
    """
    tokenizer = plain_text_tokenizer(tokenizer_json)
    if _breaks_at_cuts(tokenizer) and _agrees(tokenizer, NEWLINE, NEWLINE_PROBES):
        return NEWLINE
    for plan in PLANS[1:]:
        if _agrees(tokenizer, plan, SPACE_PROBES):
            log.info("Long documents are cut %s: newline cuts change these ids", plan.name)
            return plan
    log.warning(
        "This tokenizer changes its tokens wherever a document is cut, so a document longer than "
        "%d characters may get a token or two other than its whole text's at each cut",
        BLOCK_CHARS,
    )
    return NEWLINE


def _breaks_at_cuts(tokenizer: Tokenizer) -> bool:
    """Whether the pre-tokenizer starts a pre-token at every newline probe's cut."""
    if tokenizer.pre_tokenizer is None:
        return False
    normalize = tokenizer.normalizer.normalize_str if tokenizer.normalizer else str
    for first, rest in NEWLINE_PROBES:
        whole = tokenizer.pre_tokenizer.pre_tokenize_str(normalize(first + rest))
        if len(normalize(first)) not in {start for _, (start, _) in whole}:
            return False
    return True


def _agrees(tokenizer: Tokenizer, plan: CutPlan, probes: Iterable[tuple[str, str]]) -> bool:
    for first, rest in probes:
        try:
            whole = encode_ids(tokenizer, first + rest)
            pieces = encode_ids(tokenizer, first) + continuation_ids(tokenizer, rest, plan.prefix)
        except Exception:  # a character the vocabulary lacks (Rust raises bare): no evidence
            continue
        if whole != pieces:
            return False
    return True


def encode_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def continuation_ids(tokenizer: Tokenizer, text: str, prefix: str) -> list[int]:
    """The ids of a piece that continues a document, encoded after `prefix` if any."""
    if not prefix:
        return encode_ids(tokenizer, text)
    return strip_prefix(encode_ids(tokenizer, prefix + text), encode_ids(tokenizer, prefix))


def strip_prefix(ids: list[int], prefix_ids: list[int]) -> list[int]:
    """`ids` without the leading `prefix_ids`, which the tokenizer must have kept apart."""
    if ids[: len(prefix_ids)] != prefix_ids:  # never seen: only pieces that start with a space
        raise LMTrainError(
            f"the tokenizer merged the prefix {CONTINUATION_PREFIX!r} with a piece of a long "
            "document, so its ids cannot be separated: pass +data.source.block_chars=<n> "
            "larger than the longest document to encode every document whole"
        )
    return ids[len(prefix_ids) :]


def recut_pieces(pieces: Iterable[Piece], plan: CutPlan) -> Iterator[Piece]:
    """The pieces re-cut by `plan.pattern` (at the last match in each; the rest joins the next
    piece of the document), or as they are when it has none.

    A piece with no match is joined to the next, up to four blocks, then cut where it is (text
    without spaces, such as CJK), as `corpus.cut_pieces` does.
    """
    if plan.pattern is None:
        yield from pieces
        return
    carry = ""
    split = ""
    for piece in pieces:
        split = piece.split
        text = carry + piece.text if carry else piece.text
        carry = ""
        if piece.end:
            yield Piece(split, text, True)
            continue
        cut = last_cut(text, plan.pattern, most=4 * BLOCK_CHARS)
        if cut is None:
            carry = text
            continue
        carry = text[cut:]
        yield Piece(split, text[:cut], False)
    if carry:  # a stream that ended inside a document, as it came
        yield Piece(split, carry, False)
