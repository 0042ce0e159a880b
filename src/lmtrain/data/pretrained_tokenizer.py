"""`data.tokenizer.kind=pretrained`: a published tokenizer, a hub id or a local folder.

Split from `lmtrain.data.tokenizers`, which dispatches on the kind: a local folder is input from
disk, so its JSON files are checked before transformers indexes them, code it ships is never run,
and the token cache's fingerprint covers every file that defines its tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.checks import Problems

if TYPE_CHECKING:
    from lmtrain.data.tokenizers import TokenizerSettings

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


def check_pretrained(settings: TokenizerSettings, problems: Problems) -> None:
    if not settings.name:
        problems.add(
            f"data.tokenizer.name={settings.name!r} is empty: pass a Hugging Face hub id or a "
            "local folder for kind=pretrained"
        )


def pretrained_fingerprint(settings: TokenizerSettings) -> dict[str, Any]:
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
