"""A model folder (an `lmtrain.export` folder, any `save_pretrained` folder, or peft's adapter
folder) loaded for eval, generate and export, and `LoadedModel`, what every loader returns.

A folder is copied, synced and downloaded by hand, so it is read as untrusted and possibly cut
short: each JSON file must hold an object, and weights that safetensors, torch or transformers
cannot read end in one line naming the folder and the file, not in a traceback from json,
safetensors or transformers (`lmtrain.models.pretrained`, which training's model.pretrained goes
through too). `lmtrain.models.checkpoint.load_model` sends folders here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.data.pretrained_tokenizer import lacks_tokenizer_config, no_tokenizer_config
from lmtrain.errors import LMTrainError, first_line
from lmtrain.models.causal import check_causal
from lmtrain.models.checkpoint_contents import unbuildable_tokenizer
from lmtrain.models.pretrained import load_weights, loading_error
from lmtrain.models.tokenizer_digest import DIGEST_KEY, check_tokenizer_digest
from lmtrain.utils.export_dir import EXPORT_META

# What tokenizer.save_pretrained writes in every case; a model folder without either has no
# tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# The folder's JSON files that must each hold an object when present: json, transformers and
# peft read them with no check and fail with a traceback (a list, cut-short text) or not at all.
JSON_FILES = ("config.json", "adapter_config.json", *TOKENIZER_FILES, EXPORT_META)
# What to do about a folder whose files are damaged.
COPY_AGAIN = "copy the whole folder again, or export the checkpoint again with lmtrain.export"


@dataclass
class LoadedModel:
    """An HF model and tokenizer, the config of the run that trained them, and what it reached.

    `info` holds `global_step`, `tokens_seen` and `val_loss` when known (None otherwise).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    run_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


def model_from_folder(path: str | Path) -> LoadedModel:
    """An HF folder: weights and tokenizer with `from_pretrained`, run config from `lmtrain.json`
    when lmtrain.export wrote one (a plain save_pretrained folder has none).

    A folder without its tokenizer files is refused: AutoTokenizer would quietly build a
    tokenizer of one token from config.json, and every tool would then give wrong results. So is
    one whose tokenizer is not the one lmtrain.json records (`lmtrain.models.tokenizer_digest`),
    and, as training refuses it, an encoder with an LM head (`lmtrain.models.causal`).
    The JSON files are checked before anything loads the weights, so a damaged small file is
    found at once.
    """
    folder = Path(path)
    refuse_run_folder(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise missing_tokenizer(path, f"it has no {' or '.join(TOKENIZER_FILES)}")
    if lacks_tokenizer_config(folder):
        raise LMTrainError(no_tokenizer_config(f"ckpt_path={str(path)!r}"))
    present = [name for name in JSON_FILES if (folder / name).is_file()]
    documents = {name: json_object(folder, name) for name in present}
    meta = documents.get(EXPORT_META, {})
    run_config, info = export_meta(folder, meta)
    if (digest := meta.get(DIGEST_KEY)) is not None and not isinstance(digest, str):
        raise unusable_file(
            folder, EXPORT_META, f"its {DIGEST_KEY} is {json_kind(digest)}, not a string"
        )
    subject = f"ckpt_path={str(path)!r}"
    advice = "pass a folder with the model and its tokenizer, as lmtrain.export writes it"
    try:
        if (folder / "adapter_config.json").is_file():  # LoRA adapters (export merge=false)
            from lmtrain.models.lora_folder import load_adapter_folder  # uses this module

            recorded = info.get("lora") if isinstance(info.get("lora"), dict) else {}
            model = load_adapter_folder(path, recorded)
        else:  # a .bin is read weights-only, custom code refused
            model = load_weights(path, subject, advice, COPY_AGAIN)
    except Exception as err:  # peft's errors: mapped as the weights' are
        failure = loading_error(subject, path, err, advice, COPY_AGAIN)
        if failure is None:
            raise
        raise failure from None
    check_causal(model, subject, saved=True)  # an encoder's loss would read the answer
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:  # files from disk: tokenizers raises KeyError, a bare Exception...
        failure = loading_error(subject, path, err, advice, COPY_AGAIN)
        raise failure or unbuildable_tokenizer(subject, err, COPY_AGAIN) from None
    # A real tokenizer may be smaller than config.vocab_size (padded, e.g. GPT-2's 50257 in
    # 50304 embeddings), never a single token.
    if len(tokenizer) < 2:
        raise missing_tokenizer(path, f"its tokenizer has {len(tokenizer)} token(s)")
    # .weight, not .num_embeddings: peft's LoRA layer on the embedding has only the former.
    embeddings = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embeddings:  # another model's tokenizer: ids past the table, IndexError
        raise LMTrainError(
            f"ckpt_path={str(path)!r} has a tokenizer of {len(tokenizer)} tokens for a model of "
            f"{embeddings} embeddings: copy in the tokenizer files the model was trained with, "
            "or export the checkpoint again with lmtrain.export"
        )
    check_tokenizer_digest(path, tokenizer, digest)  # another tokenizer of the same size
    model.eval()
    return LoadedModel(model, tokenizer, run_config, info)


def refuse_run_folder(folder: Path) -> None:
    """Refuse a training run's folder (it holds checkpoints/, no config.json), naming the
    checkpoint to pass: it was told it "has no usable tokenizer: copy the tokenizer files in"."""
    if (folder / "checkpoints").is_dir() and not (folder / "config.json").is_file():
        raise LMTrainError(
            f"ckpt_path={str(folder)!r} is a training run's folder, not a model folder: pass its "
            f"checkpoint, {str(folder / 'checkpoints' / 'last.ckpt')!r} (or a best-*.ckpt)"
        )


def json_object(folder: Path, name: str) -> dict[str, Any]:
    """The JSON object in `folder/name`, or one line naming the file and what is wrong with it."""
    try:
        value = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise unusable_file(folder, name, first_line(err)) from None
    if not isinstance(value, dict):
        raise unusable_file(folder, name, f"it holds {json_kind(value)}, not an object")
    return value


def export_meta(folder: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run config and training info of an export's `lmtrain.json` (`meta`), each an object
    or absent: eval, generate and the model card read keys from both."""
    parts = []
    for key in ("run_config", "info"):
        value = meta.get(key) or {}
        if not isinstance(value, dict):
            why = f"its {key} is {json_kind(value)}, not an object"
            raise unusable_file(folder, EXPORT_META, why)
        parts.append(value)
    return parts[0], parts[1]


def json_kind(value: Any) -> str:
    """What JSON calls the kind of a parsed value: the user edited JSON, not Python."""
    if isinstance(value, bool):
        return "a boolean"
    kinds = {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
    }
    return kinds.get(type(value), "null")


def unusable_file(folder: Path, name: str, why: str) -> LMTrainError:
    """The refusal of a model folder whose file `name` cannot be read as it must be."""
    return LMTrainError(f"ckpt_path={str(folder)!r} has an unusable {name} ({why}): {COPY_AGAIN}")


def missing_tokenizer(path: str | Path, what: str) -> LMTrainError:
    """The refusal of a model folder whose tokenizer is missing (`what`: how that shows)."""
    return LMTrainError(
        f"ckpt_path={str(path)!r} has no usable tokenizer ({what}): copy the tokenizer files "
        "into it (tokenizer.save_pretrained(folder)), or export the checkpoint again with "
        "lmtrain.export"
    )
