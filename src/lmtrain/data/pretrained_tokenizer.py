"""`data.tokenizer.kind=pretrained`: a published tokenizer, a hub id or a local folder.

Split from `lmtrain.data.tokenizers`, which dispatches on the kind: a local folder is input from
disk, so its JSON files are checked before transformers indexes them, code it ships is never run,
and the token cache's fingerprint covers every file that defines its tokens (the names
transformers gives them, so model weights next to them are never read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.models.auto.tokenization_auto import (
    TOKENIZER_MAPPING_NAMES,
    tokenizer_class_from_name,
)
from transformers.tokenization_utils_base import (
    ADDED_TOKENS_FILE,
    FULL_TOKENIZER_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    get_fast_tokenizer_file,
)
from transformers.utils import CHAT_TEMPLATE_DIR, CHAT_TEMPLATE_FILE, CONFIG_NAME

from lmtrain.data.corpus_tokenizer import CUTS_VERSION
from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.checks import Problems, names_local_path, setting_text

if TYPE_CHECKING:
    from lmtrain.data.tokenizers import TokenizerSettings

# The files transformers reads for any tokenizer class of a local folder (`from_pretrained`): the
# config and special tokens, the full tokenizer, and the chat template (saved with the cache's
# tokenizer, so exports carry it). config.json's model_type picks the class when
# tokenizer_config.json names none. Each class adds its own `vocab_files_names`
# (`_defining_files`); none of them is a weights file.
COMMON_TOKENIZER_FILES = (
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    ADDED_TOKENS_FILE,
    FULL_TOKENIZER_FILE,
    CHAT_TEMPLATE_FILE,
    CONFIG_NAME,
)
# The fallback of `PreTrainedTokenizerBase.from_pretrained` when the full tokenizer file is
# missing: the vocabulary is read from a file of one of these names (Mistral's tekken.json, ...).
# transformers has no constant for the pattern, so it is repeated here; such files are hashed
# whether or not tokenizer.json is there.
VOCAB_FALLBACK = re.compile(r"tekken\.json|tokenizer\.model\.*|tiktoken\.model")


def tokenizer_name(value: Any) -> str | None:
    """`data.tokenizer.name` as text: `name=123` (a folder named 123) is the name it was typed
    as; a list or a mapping is one line (see `setting_text`)."""
    return setting_text("data.tokenizer.name", value, "a Hugging Face hub id or a local folder")


def check_pretrained(settings: TokenizerSettings, problems: Problems) -> None:
    try:
        name = tokenizer_name(settings.name)
    except LMTrainError as err:
        problems.add(str(err))
        return
    if not name:
        problems.add(
            f"data.tokenizer.name={name!r} is empty: pass a Hugging Face hub id or a "
            "local folder for kind=pretrained"
        )
        return
    folder = Path(name).expanduser()
    if folder.is_dir() and not defining_files(folder):
        problems.add(no_tokenizer_files(name))
    elif folder.is_dir() and lacks_tokenizer_config(folder):
        problems.add(no_tokenizer_config(f"data.tokenizer.name={name!r}"))


def defining_files(folder: Path) -> list[str]:
    """The tokenizer files of `folder` other than config.json, which only picks the class: a
    folder of `model.save_pretrained(folder)` alone has none, and transformers (5.x) then
    builds an empty GPT-2 tokenizer (its eos token alone) instead of failing."""
    return [name for name in tokenizer_files(folder) if name != CONFIG_NAME]


def lacks_tokenizer_config(folder: Path) -> bool:
    """Whether `folder` has tokenizer files but no tokenizer_config.json, which names the
    tokenizer's class and settings. Without it transformers picks a class from config.json's
    model_type: a char tokenizer saved from a GPT-2 model loaded as GPT2Tokenizer, which drops
    spaces and newlines, and every tool read text with other ids, without a word."""
    return bool(defining_files(folder)) and not (folder / TOKENIZER_CONFIG_FILE).is_file()


def no_tokenizer_config(setting: str) -> str:
    """The line refusing a folder whose tokenizer_config.json is missing (`setting`: the
    command's key and value)."""
    return (
        f"{setting} has tokenizer files but no {TOKENIZER_CONFIG_FILE}, so transformers would "
        "guess the tokenizer from config.json and read text with other ids: copy the whole "
        "folder again (tokenizer.save_pretrained writes it), or export the checkpoint again "
        "with lmtrain.export"
    )


def no_tokenizer_files(name: str) -> str:
    """The line refusing a folder without tokenizer files (the model's weights alone)."""
    return (
        f"data.tokenizer.name={name!r} holds no tokenizer files ({FULL_TOKENIZER_FILE}, "
        "vocab.json, ...; model.save_pretrained alone writes none): pass data.tokenizer.name="
        "<folder or hub id of the model's tokenizer>, or save the tokenizer into that folder "
        "(tokenizer.save_pretrained)"
    )


def pretrained_fingerprint(settings: TokenizerSettings) -> dict[str, Any]:
    """A local folder's tokenizer by content: the sha256 of each file that defines it; a hub id
    by its name.

    Any edit (a new eos token in tokenizer_config.json, a changed merge, a sentencepiece model)
    rebuilds the cache, even one that keeps a file's size and mtime. The files are small next to
    the corpus (a few MB for the largest vocabularies), so hashing them costs milliseconds; the
    model weights a folder may also hold are not read. Where the folder lies is left out: the
    same files elsewhere (a folder moved, the copy of the model's tokenizer each lmtrain.eval run
    saves in its own run folder) find the same cache, and other files another one.
    """
    name = tokenizer_name(settings.name)
    folder = Path(str(name)).expanduser()
    files = tokenizer_files(folder) if name and folder.is_dir() else []
    # Which tokens a long document gets depends on where it is cut (`corpus_tokenizer`).
    if not files:  # a hub id (or a folder with no tokenizer, which loading refuses)
        return {"name": name, "cuts": CUTS_VERSION}
    relevant: dict[str, Any] = {
        "files": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in files},
        "cuts": CUTS_VERSION,
    }
    # A tokenizer.json with truncation or padding cut (or padded) the corpus before they were
    # turned off for it (lmtrain.data.encode): a cache built then must not be reused. Only such
    # folders get the key.
    full = _json_object(folder / "tokenizer.json")
    if full.get("truncation") or full.get("padding"):
        relevant["documents_whole"] = True
    return relevant


def tokenizer_files(folder: Path) -> list[str]:
    """The files of `folder` (relative names) that `AutoTokenizer.from_pretrained` may read.

    transformers' own names: the files every tokenizer reads, a versioned full tokenizer file
    that tokenizer_config.json lists (`fast_tokenizer_files`), extra chat templates, the files
    read when the full tokenizer is missing, and the `vocab_files_names` of each class the folder
    may load as (the one tokenizer_config.json or config.json names, the one of config.json's
    model_type, the generic fallback). A file more than the class in the end reads is harmless
    (a rebuild when it changes); a missed one lets an edited tokenizer reuse a stale cache.
    """
    config = _json_object(folder / TOKENIZER_CONFIG_FILE)
    model_config = _json_object(folder / CONFIG_NAME)
    names = set(COMMON_TOKENIZER_FILES)
    listed = config.get("fast_tokenizer_files")
    for entry in listed if isinstance(listed, list) else []:
        # The library's choice among the versions: each entry this transformers may pick.
        with contextlib.suppress(Exception):  # not a string, not a version: loading says so
            names.add(get_fast_tokenizer_file([entry]))
    candidates = [
        config.get("tokenizer_class"),
        model_config.get("tokenizer_class"),
        TOKENIZER_MAPPING_NAMES.get(str(model_config.get("model_type"))),
        "TokenizersBackend",
    ]
    for class_name in candidates:
        if isinstance(class_name, str) and class_name:
            names.update(_defining_files(class_name))
    names.update(path.name for path in folder.iterdir() if VOCAB_FALLBACK.search(path.name))
    templates = folder / CHAT_TEMPLATE_DIR
    if templates.is_dir():
        names.update(f"{CHAT_TEMPLATE_DIR}/{path.name}" for path in templates.glob("*.jinja"))
    return sorted(name for name in names if (folder / name).is_file())


def _defining_files(class_name: str) -> list[str]:
    """The file names a tokenizer class declares (`vocab_files_names`), as AutoTokenizer finds
    the class by name (with or without the legacy "Fast"); none when it is unknown or its
    dependency is missing (then it cannot load either)."""
    try:
        cls = tokenizer_class_from_name(class_name)
        cls = cls or tokenizer_class_from_name(class_name + "Fast")
        declared = getattr(cls, "vocab_files_names", None) or {}
    except Exception:  # a dummy class raises ImportError, a bad name anything transformers does
        return []
    return [name for name in declared.values() if isinstance(name, str)]


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when it is missing or not one (`_check_json_objects` says so
    in one line when the folder is loaded)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return content if isinstance(content, dict) else {}


def pretrained_tokenizer(name: Any) -> PreTrainedTokenizerFast:
    """A published tokenizer (hub id or local folder), which must be fast, have an eos token and
    tokens that are not special.

    Fast, because the token cache encodes with the Rust backend; an eos token, because documents
    are separated by it. A folder without tokenizer files, or a tokenizer of special tokens alone
    (what transformers builds from a config.json alone), encoded every document to nothing: the
    run trained on the separators and exited 0.
    """
    name = tokenizer_name(name)
    if not name:
        raise LMTrainError(
            f"data.tokenizer.name={name!r} is empty: pass a Hugging Face hub id or a local folder "
            "for kind=pretrained"
        )
    if names_local_path(name) and not Path(name).expanduser().is_dir():
        raise LMTrainError(
            f"data.tokenizer.name={name!r} is not an existing folder: pass the folder that "
            "save_pretrained wrote, or a Hugging Face hub id"
        )
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not defining_files(folder):
            raise LMTrainError(no_tokenizer_files(name))
        if lacks_tokenizer_config(folder):
            raise LMTrainError(no_tokenizer_config(f"data.tokenizer.name={name!r}"))
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
    vocab = tokenizer.get_vocab()
    top = max(vocab.values(), default=-1)
    if top >= len(tokenizer):
        # The cache's dtype and the model's embedding are sized by len(tokenizer): an id past it
        # overflowed uint16 in a traceback, or failed the cache's own check on every later run.
        raise LMTrainError(
            f"data.tokenizer.name={name!r} has {len(tokenizer)} tokens but ids up to {top} (gaps "
            "in its ids): pass a tokenizer whose ids run from 0 to its size - 1"
        )
    special = set(tokenizer.all_special_tokens)
    if not set(vocab) - special:
        # Every document would encode to nothing, and the run would train on separators alone.
        raise LMTrainError(
            f"data.tokenizer.name={name!r} loads a tokenizer of {len(tokenizer)} tokens, all "
            f"special ({', '.join(sorted(special))}), so text encodes to nothing: pass "
            "data.tokenizer.name=<folder or hub id of a complete tokenizer> (tokenizer.json, "
            "vocab.json, ...)"
        )
    return tokenizer


def _check_json_objects(name: str, folder: Path) -> None:
    """Each JSON file that defines the tokenizer must hold an object: transformers indexes them
    as mappings and would fail with a TypeError deep inside (a JSON array, a number)."""
    for file in tokenizer_files(folder):
        path = folder / file
        if path.suffix != ".json":
            continue
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # also: nested too deep
            raise LMTrainError(
                f"data.tokenizer.name={name!r} has an unreadable {file} ({first_line(err)}): "
                "pass a folder that save_pretrained wrote"
            ) from None
        if not isinstance(content, dict):
            raise LMTrainError(
                f"data.tokenizer.name={name!r} has a {file} that holds a "
                f"{type(content).__name__}, not an object: pass a folder that save_pretrained wrote"
            )


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """`save_pretrained`, then the saved tokenizer_config.json without `fast_tokenizer_files`
    and `auto_map`.

    A pretrained folder may list versioned full tokenizer files there (tokenizer.4.0.0.json, ...:
    transformers loads the newest one its version allows). `save_pretrained` keeps the key but
    writes the tokenizer as plain tokenizer.json, so the saved copy would look for a file it does
    not have, fail to load, and every start would rebuild the cache. Without the key it loads
    tokenizer.json, which holds the tokenizer that was loaded: the same vocabulary and specials.

    A folder whose tokenizer_config.json names a built-in class loads with that class, whatever
    its `auto_map` says (no code runs); the copy does not keep an `auto_map` naming code it does
    not carry, as an export does not.
    """
    tokenizer.save_pretrained(folder)
    path = folder / TOKENIZER_CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8"))
    dropped = [key for key in ("fast_tokenizer_files", "auto_map") if key in config]
    if dropped:
        for key in dropped:
            del config[key]
        # As save_pretrained writes it.
        text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
