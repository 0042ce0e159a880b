"""The digest of an export's tokenizer, recorded in its `lmtrain.json` and checked on loading.

An export folder is copied and edited by hand. Tokenizer files of another model that has as many
tokens (a BPE of the same size trained on other text) load without complaint, and eval and
generate then read every id as another token: wrong numbers, nonsense text, exit code 0 (found
by a red team). A tokenizer of another size is refused already (`lmtrain.models.model_folder`).

The digest covers what maps text to ids as the loader sees it: the vocabulary (added tokens
included), the BPE merges or Unigram scores, and the bos, eos and unk ids. It is not a digest of
file bytes, which `save_pretrained` and library versions write differently (merges as "a b" or
["a", "b"], new keys such as `ignore_merges`); so a folder whose tokenizer was loaded and saved
again, or given a chat template or a pad token, keeps its digest. Folders without the record
(older exports, plain save_pretrained folders) are loaded as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError

# lmtrain.json's key for the digest.
DIGEST_KEY = "tokenizer_digest"
# The special tokens whose ids eval and generate read (documents end, prompts start, and what
# unknown text becomes); pad is left out: users set it after export, and it changes no id.
SPECIAL = ("bos", "eos", "unk")


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase, size: int | None = None) -> str:
    """`<size>:<sha256>` of what decides `tokenizer`'s ids below `size` (default: all of them;
    see the module docstring). Tokens added after the export (a new `<pad>`, past the exported
    ids) change no id the model was trained on, and leave the digest as it was."""
    size = len(tokenizer) if size is None else size
    vocab = sorted(
        ((token, i) for token, i in tokenizer.get_vocab().items() if i < size),
        key=lambda item: (item[1], item[0]),
    )
    content = {
        "vocab": vocab,
        "special": {name: getattr(tokenizer, f"{name}_token_id", None) for name in SPECIAL},
        "model": model_content(tokenizer),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return f"{size}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def model_content(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The parts of a fast tokenizer's model beyond its vocabulary that change ids: its type, its
    merges (as pairs, whichever way the file spelt them) and a Unigram's scores. Empty for a slow
    tokenizer, which exports never hold: its vocabulary alone is compared."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return {}
    model = json.loads(backend.to_str()).get("model") or {}
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model.get("merges") or []]
    vocab = model.get("vocab")
    return {
        "type": model.get("type"),
        "merges": merges,
        "scores": vocab if isinstance(vocab, list) else None,  # Unigram: [piece, score] pairs
    }


def same_encoding(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether the fast tokenizers `a` and `b` give the same ids as lmtrain encodes (with
    add_special_tokens=False): their whole state but the post-processor, which adds the tokens
    around a text, and which an export saves without its adding parts (export_tokenizer)."""
    states = [json.loads(t.backend_tokenizer.to_str()) for t in (a, b)]
    for state in states:
        state.pop("post_processor", None)
    return states[0] == states[1]


def check_tokenizer_digest(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, recorded: str | None
) -> None:
    """Refuse the folder `path` when its loaded `tokenizer` is not the one its lmtrain.json
    recorded (`recorded`; None: no record, nothing to compare)."""
    if recorded is None:
        return
    size, _, _ = recorded.partition(":")
    if size.isdigit() and tokenizer_digest(tokenizer, int(size)) == recorded:
        return
    raise LMTrainError(
        f"ckpt_path={str(path)!r} holds tokenizer files other than the ones it was exported with "
        f"(its lmtrain.json records their {DIGEST_KEY}): copy in the tokenizer files of the "
        "export, or export the checkpoint again with lmtrain.export"
    )
