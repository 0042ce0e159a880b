"""How many bytes of UTF-8 text each token id stands for: the table behind `val/bpb`.

Bits per byte is the sum of the token losses (in bits) over the bytes of text the tokens spell.
With one number per token id, the byte count of a batch is a lookup on the device (nanochat's
`token_bytes`), so validation never decodes the val split into one string.

A token's bytes are those it adds to a decoded text, so the table sums to the length of
`tokenizer.decode(ids, skip_special_tokens=True)` for text that decodes cleanly:
- special tokens (end-of-text, padding, ...) count 0 bytes: decoding with
  `skip_special_tokens=True`, as `lmtrain.eval` does, drops them;
- a byte-level BPE token (GPT-2, Llama 3, `data.tokenizer.kind=bpe`) counts its raw bytes, read
  through the byte-level alphabet: a token that holds part of a character's UTF-8 sequence
  would decode alone to U+FFFD (3 bytes) instead of the 1 or 2 bytes it carries;
- a byte-fallback token (`<0x0A>` in SentencePiece-style BPE) counts 1 byte;
- any other token (a character of `kind=char`, a `▁word` piece, a `##suffix`) counts what it
  adds after another token: decode(t t) minus decode(t), which keeps the space that a leading
  `▁` stands for (decoders drop it at the start of a text only).
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

BYTE_FALLBACK_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def token_byte_lengths(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """int64 tensor of `len(tokenizer)` entries: the UTF-8 bytes each token id decodes to."""
    ids = list(range(len(tokenizer)))
    tokens = tokenizer.convert_ids_to_tokens(ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)  # None: a slow tokenizer
    decoder_types = _decoder_types(backend.decoder) if backend is not None else set()
    if "ByteLevel" in decoder_types:
        lengths = [_byte_level_length(token) for token in tokens]
    else:
        lengths = _lengths_after_another_token(tokenizer, ids)
        if "ByteFallback" in decoder_types:
            lengths = [
                1 if BYTE_FALLBACK_TOKEN.fullmatch(token or "") else n
                for token, n in zip(tokens, lengths, strict=True)
            ]
    for special in _special_ids(tokenizer):
        lengths[special] = 0
    return torch.tensor(lengths, dtype=torch.int64)


def _decoder_types(decoder: Any) -> set[str]:
    """The `type` of a `tokenizers` decoder and of every decoder in it (a `Sequence`), from the
    JSON it pickles as: the Python classes do not list a Sequence's members."""
    if decoder is None:
        return set()

    def walk(node: dict[str, Any]) -> set[str]:
        inner = node.get("decoders") or []
        return {str(node.get("type"))}.union(*(walk(d) for d in inner))

    return walk(json.loads(decoder.__getstate__()))


_BYTE_OF_CHAR = {char: byte for byte, char in bytes_to_unicode().items()}


def _byte_level_length(token: str | None) -> int:
    """Bytes a byte-level token decodes to, as the `tokenizers` ByteLevel decoder does it: one
    byte per character of the byte alphabet, or the token's own UTF-8 if any character is not
    in it (an added token is stored as plain text)."""
    if token is None:
        return 0
    if all(char in _BYTE_OF_CHAR for char in token):
        return len(token)
    return len(token.encode("utf-8"))


def _lengths_after_another_token(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """len(decode([t, t])) - len(decode([t])) in UTF-8 bytes, for every id `t`, decoded in one
    batch (in Rust for a fast tokenizer), with no clean-up of spaces."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pairs, singles = [[i, i] for i in ids], [[i] for i in ids]
    if backend is not None:
        twice = backend.decode_batch(pairs, skip_special_tokens=False)
        once = backend.decode_batch(singles, skip_special_tokens=False)
    else:
        options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        twice = tokenizer.batch_decode(pairs, **options)
        once = tokenizer.batch_decode(singles, **options)
    return [
        len(two.encode("utf-8")) - len(one.encode("utf-8"))
        for two, one in zip(twice, once, strict=True)
    ]


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids that `decode(..., skip_special_tokens=True)` drops: the named special tokens and
    every added token marked special."""
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return {i for i in (*tokenizer.all_special_ids, *added) if 0 <= i < len(tokenizer)}
