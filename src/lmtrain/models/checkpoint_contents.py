"""What a file must hold to be a checkpoint of ours, checked before anything reads it.

`torch.load` reads any `torch.save` file: a bare tensor, a state dict saved by another tool, a dict
cut down by hand. Each would fail later with a KeyError or AttributeError deep in our loaders or in
Lightning's restore. The keys are checked once, right after the safe load, so the error is one line
naming the file and what it lacks. The tokenizer travels in the checkpoint as the files
`save_pretrained` writes (`tokenizer_from_files` turns them back into one). Here too: whether a
checkpoint fits the run that resumes it (its tokenizer, model settings and training windows).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmtrain.errors import LMTrainError, first_line
from lmtrain.models.weight_flags import weight_changing_keys
from lmtrain.utils.safe_load import CHECKPOINT_KEY  # the entry CausalLMModule adds
from lmtrain.utils.sharded_layout import is_sharded_checkpoint, one_file_advice

# checkpoint[CHECKPOINT_KEY][LORA_KEY], in a LoRA run's checkpoints: its settings (a mapping), the
# base model's reference and the digest of its weights (strings); `lmtrain.models.lora`.
LORA_KEY = "lora"
LORA_ENTRY: dict[str, tuple[type, str]] = {
    "base_model": (str, "a string"),
    "settings": (Mapping, "a mapping"),
    "base_digest": (str, "a string"),
}
# What eval, generate and export read: the weights and how to rebuild model and tokenizer.
MODEL_KEYS = ("state_dict", f"{CHECKPOINT_KEY}.hf_config", f"{CHECKPOINT_KEY}.tokenizer_files")
# What Lightning's restore reads on top to resume training (absent from a weights-only save).
RESUME_KEYS = ("optimizer_states", "lr_schedulers", "loops", "global_step", "epoch")
WRITTEN_BY = "pass a checkpoint written by lmtrain.train, e.g. <run folder>/checkpoints/last.ckpt"


def missing_keys(checkpoint: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The `keys` (dotted for nested entries) that `checkpoint` lacks or holds empty."""
    missing = []
    for key in keys:
        value: Any = checkpoint
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None or (isinstance(value, Mapping) and not value):
            missing.append(key)
    return missing


def check_contents(
    checkpoint: Any, path: str | Path, resume: bool, sharded: bool = False
) -> dict[str, Any]:
    """`checkpoint` as a dict if it holds what our readers need (`resume`: what training's
    restore needs too); else one line naming the file and what it lacks."""
    if not isinstance(checkpoint, Mapping):
        raise LMTrainError(
            f"ckpt_path={str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint: "
            f"{WRITTEN_BY}"
        )
    # A sharded folder's weights and optimizer states are in its shards, which the strategy's
    # own reader checks (lmtrain.strategies); its meta file holds the rest of what resuming
    # reads, which a weights-only save leaves out (the shards' reader would only say that the
    # optimizer's entries are missing, as if another tool had written the folder).
    if sharded:
        keys = tuple(k for k in RESUME_KEYS if k != "optimizer_states") if resume else ()
    else:
        keys = MODEL_KEYS + (RESUME_KEYS if resume else ())
    missing = missing_keys(checkpoint, keys)
    if missing and not sharded and is_sharded_checkpoint(Path(path).parent):  # its meta.pt alone
        folder = Path(path).parent
        raise LMTrainError(
            f"ckpt_path={str(path)!r} is no checkpoint on its own: {one_file_advice(folder)}"
        )
    if missing and set(missing) <= set(RESUME_KEYS):
        raise LMTrainError(
            f"ckpt_path={str(path)!r} lacks {', '.join(missing)}, which resuming training needs "
            "(saved with save_weights_only?): resume from a whole checkpoint (a run saved with "
            "save_weights_only=true has none: start a new run), or use this one with eval, "
            "generate or export"
        )
    if missing:
        raise LMTrainError(
            f"ckpt_path={str(path)!r} lacks {', '.join(missing)}, so it was not written by "
            f"lmtrain.train (another tool's file, or a dict cut down by hand?): {WRITTEN_BY}"
        )
    check_lora_entry(checkpoint, path)
    return dict(checkpoint)


def check_lora_entry(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a LoRA entry that lmtrain.train cannot have written, before anything reads it: its
    keys are read by eval, generate, export and resume, and the tensor checksum does not cover
    them (an entry edited by hand ended in a KeyError, AttributeError or TypeError)."""
    extra = checkpoint.get(CHECKPOINT_KEY)
    entry = extra.get(LORA_KEY) if isinstance(extra, Mapping) else None
    if entry is None:
        return
    entry_name = f"{CHECKPOINT_KEY}.{LORA_KEY}"
    if not isinstance(entry, Mapping):
        problem = f"its {entry_name} entry is a {type(entry).__name__}, not a mapping"
    else:
        wrong = [
            f"lacks {key}"
            if entry.get(key) is None
            else f"has a {type(entry[key]).__name__} as {key}, not {kind}"
            for key, (types, kind) in LORA_ENTRY.items()
            if not isinstance(entry.get(key), types)
        ]
        if not wrong:
            return
        problem = f"its {entry_name} entry {' and '.join(wrong)}"
    raise LMTrainError(
        f"ckpt_path={str(path)!r}: {problem}, so lmtrain.train did not write it as it is "
        f"(altered by hand or by a tool?): {WRITTEN_BY}"
    )


def model_from_contents(hf_config: Any, state: dict[str, Any], path: str | Path) -> PreTrainedModel:
    """The HF causal LM a checkpoint's `hf_config` describes, with the weights `state`, in eval
    mode; a config that builds no model, or weights of another shape, is one line."""
    try:
        config_dict = dict(hf_config)
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        # A config from a file: an auto_map in it must not import and run code (transformers
        # asks [y/N] on a terminal when this is unset).
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as err:  # a KeyError, TypeError or ValueError from a damaged entry
        raise LMTrainError(
            f"ckpt_path={str(path)!r}: its {CHECKPOINT_KEY}.hf_config builds no model "
            f"({type(err).__name__}: {first_line(err)}): {WRITTEN_BY}"
        ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch's first line only says "Error(s) in loading ..."
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise LMTrainError(
            f"ckpt_path={str(path)!r}: its weights do not fit its {CHECKPOINT_KEY}.hf_config "
            f"({lines[0] if lines else first_line(err)}): {WRITTEN_BY}"
        ) from None
    return model.eval()


def tokenizer_file_texts(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer as `save_pretrained` writes it, file name -> text (what checkpoints hold)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {p.name: p.read_text() for p in Path(folder).iterdir() if p.is_file()}


def tokenizer_from_files(files: Any, source: str | Path) -> PreTrainedTokenizerBase:
    """Rebuild a tokenizer from the file contents `save_pretrained` wrote, as the checkpoint
    `source` holds them.

    The names come from a file on disk: each must be a plain file name, or writing it would
    land outside the temporary folder (`../`, an absolute path)."""
    problem = tokenizer_files_problem(files)
    if problem is not None:
        raise LMTrainError(
            f"ckpt_path={str(source)!r}: its tokenizer files {problem}, so lmtrain.train did not "
            f"write it as it is (altered by hand or by a tool?): {WRITTEN_BY}"
        )
    with tempfile.TemporaryDirectory() as folder:
        for name, text in files.items():
            (Path(folder) / name).write_text(text)
        # Files from a checkpoint: an auto_map in them must not fetch and run code.
        try:
            return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        except Exception as err:  # custom code asked for, a damaged file: tokenizers raises
            # KeyError, a bare Exception ("data did not match any variant"), ...
            raise unbuildable_tokenizer(f"ckpt_path={str(source)!r}", err, WRITTEN_BY) from None


def unbuildable_tokenizer(subject: str, err: BaseException, advice: str) -> LMTrainError:
    """The line for tokenizer files that transformers cannot build a tokenizer from."""
    return LMTrainError(
        f"{subject}: its tokenizer files build no tokenizer ({type(err).__name__}: "
        f"{first_line(err)}; damaged, or written by a newer tokenizers than the one installed?): "
        f"{advice}"
    )


def tokenizer_files_problem(files: Any) -> str | None:
    """What makes `files` no tokenizer's file names and texts (None: nothing)."""
    if not isinstance(files, Mapping):
        return f"are a {type(files).__name__}, not file names with their texts"
    for name, text in files.items():
        plain = isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
        if not plain or "\\" in name or "\0" in name:
            return f"include {name!r}, not a plain file name"
        if not isinstance(text, str):
            return f"hold a {type(text).__name__} as {name!r}, not its text"
    return None


def check_same_tokenizer(
    ckpt_path: str | Path,
    saved_files: dict[str, str] | None,
    tokenizer: PreTrainedTokenizerBase | None,
) -> None:
    """Refuse to resume a checkpoint whose tokenizer maps tokens to other ids than this run's:
    its embedding rows would be read as other tokens. A corpus or tokenizer setting changed
    since (or a cache rebuilt under new rules: a BPE tokenizer retrained on other files) does
    that silently. Compared by vocabulary and eos id, not by file text, which library versions
    may write differently."""
    if not saved_files or tokenizer is None:
        return
    saved = tokenizer_from_files(saved_files, ckpt_path)
    if saved.get_vocab() == tokenizer.get_vocab() and saved.eos_token_id == tokenizer.eos_token_id:
        return
    raise LMTrainError(
        f"ckpt_path={str(ckpt_path)!r} was trained with another tokenizer than this run's data "
        f"gives ({len(saved)} tokens there, {len(tokenizer)} here, or the same count mapped to "
        "other ids): resume with the run's own data.source and data.tokenizer settings (resume="
        "<run folder> reads them), or drop ckpt_path to start a new run"
    )


def check_same_windows(
    ckpt_path: str | Path, run_config: Mapping[str, Any] | None, windows: Mapping[str, Any]
) -> None:
    """Refuse to go on with a run's own checkpoint on other training windows: `windows` holds
    this run's `data.*` keys that pick them (block_size, seed), compared with the run's
    (`run_config`, saved in the checkpoint, resolved). `resume=` refuses changing them
    (FIXED_KEYS); this holds the `ckpt_path=last hydra.run.dir=<run>` form, which retypes every
    override, to the same."""
    data = (run_config or {}).get("data") or {}
    changed = [
        f"data.{key}={value!r} (the run's: {data[key]!r})"
        for key, value in windows.items()
        if key in data and data[key] != value
    ]
    if changed:
        raise LMTrainError(
            f"ckpt_path={str(ckpt_path)!r} continues a run trained on other windows: "
            f"{', '.join(changed)}: type the run's values (or resume=<run folder>, which "
            "reads them), or start a new run folder"
        )


def check_same_optimizer(
    ckpt_path: str | Path,
    run_config: Mapping[str, Any] | None,
    target: str | None,
    freeze: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a checkpoint whose optimizer state another optimizer saved, or that holds the
    state of other parameters: `target` and `freeze` are this run's `model.optimizer._target_`
    and `model.freeze`, compared with the run's (`run_config`). Muon's parts resumed with AdamW
    ended in torch's `KeyError: 'param_groups'` once the data was prepared (under FSDP, in the
    sharded reader); AdamW resumed with Muon's parts was refused only then; another freeze in
    torch's "loaded state dict contains a parameter group that doesn't match the size".
    `resume=` refuses both switches (FIXED_KEYS); this holds `ckpt_path=` to the same."""
    model = (run_config or {}).get("model") or {}
    optimizer = model.get("optimizer") or {}
    saved = optimizer.get("_target_") if isinstance(optimizer, Mapping) else None
    advice = (
        "or export it (lmtrain.export) and start a new run from its weights with "
        "model.pretrained=<export folder>"
    )
    if saved and target and saved != target:
        raise LMTrainError(
            f"ckpt_path={str(ckpt_path)!r} holds the state of model.optimizer._target_={saved}, "
            f"not of this run's {target}: resume with the optimizer the checkpoint was trained "
            f"with (its model/optimizer= option), {advice}"
        )
    frozen = model.get("freeze") if isinstance(model, Mapping) else None
    if isinstance(frozen, Mapping) and isinstance(freeze, Mapping) and dict(frozen) != dict(freeze):
        raise LMTrainError(
            f"ckpt_path={str(ckpt_path)!r} was trained with model.freeze={dict(frozen)}, not "
            f"this run's {dict(freeze)}, so its optimizer state is for other parameters: resume "
            f"with model.freeze as it was, {advice}"
        )


def model_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved, current) for the HF config entries that make two models different.

    The model type, every integer setting (widths, depths, heads, context, vocabulary) except
    token ids, and any other setting that adds or reshapes weights (`weight_changing_keys`:
    tie_word_embeddings, attention_bias, ...); dropout and other floats may change on resume.
    """
    differences, others = [], []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a == b or key.endswith(("_token_id", "_token_ids")) or key.startswith("_"):
            continue
        integers = [v for v in (a, b) if isinstance(v, int) and not isinstance(v, bool)]
        (differences if key == "model_type" or integers else others).append((key, a, b))
    changing = weight_changing_keys(saved, current, [key for key, _, _ in others])
    return sorted([*differences, *(entry for entry in others if entry[0] in changing)])
