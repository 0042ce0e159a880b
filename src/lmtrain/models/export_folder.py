"""A checkpoint written out as a plain Hugging Face folder, checked, and renamed into place.

The work behind `python -m lmtrain.export` (see `lmtrain.export` for what the folder holds), also
done by the callback that logs the model to W&B at the end of training
(`lmtrain.callbacks.wandb_artifact`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.utils import logging as hf_logging

from lmtrain.errors import LMTrainError, first_line
from lmtrain.models import lora
from lmtrain.models.checkpoint import LoadedModel, load_model
from lmtrain.models.export_tokenizer import (
    check_encoding,
    length_settings,
    probe_text,
    refuse_slow,
    save_tokenizer,
)
from lmtrain.models.hf import context_length
from lmtrain.models.lora_folder import load_adapter_folder, with_base_config
from lmtrain.models.model_card import final_metrics, hub_repo, model_card
from lmtrain.models.nan_guard import non_finite_weight
from lmtrain.models.tokenizer_digest import DIGEST_KEY
from lmtrain.utils.export_dir import (
    EXPORT_META,
    NEVER_REPLACED,
    apply_umask,
    checked_out_dir,
    hold_lock,
    make_parents,
    remove_dead_leftovers,
    remove_if_empty,
    replace_folder,
    swap_lock,
)
from lmtrain.utils.export_overwrite import carry_over, record_files
from lmtrain.utils.io import NO_SPACE
from lmtrain.utils.redact import scrub
from lmtrain.utils.stored_targets import check_stored_data

log = logging.getLogger(__name__)

# Settings only sampling reads. A greedy export (generation.do_sample=false) saves none of them:
# transformers refuses to save a greedy config that sets one (export.yaml sets temperature).
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff")


def export_checkpoint(
    source: str,
    out_dir: str,
    *,
    root_dir: str,
    overwrite: bool = False,
    verify: bool = True,
    generation: dict[str, Any] | None = None,
    model_name: str | None = None,
    license: str | None = None,
    merge: bool = True,
) -> Path:
    """Export the checkpoint (or exported folder) `source` to `out_dir`; return its path.

    What `export` does without the entry point's W&B handling, so a callback can call it inside a
    run (`lmtrain.callbacks.wandb_artifact`). `generation` is the generation config's sampling
    settings; the rest are export.yaml's keys. A LoRA checkpoint's adapters are merged into the
    weights, or with `merge=False` written alone, as peft's adapter folder.
    """
    target = checked_out_dir(out_dir, source, root_dir, overwrite)
    hf_logging.disable_progress_bar()
    loaded = load_model(source)
    base = lora.base_folder(loaded.model)  # the adapters need it: it is theirs, not ours
    if base is not None and base.is_relative_to(target):
        raise LMTrainError(
            f"out_dir={out_dir!r} is or contains {str(base)!r}, the base model of the LoRA "
            f"adapters in ckpt_path={source!r}: {NEVER_REPLACED}"
        )
    # The run config is copied as data; eval checks its targets before it builds anything from
    # it (a data source of one's own, named by a hydra.searchpath config, is legitimate).
    try:
        check_stored_data(loaded.run_config, f"ckpt_path={source!r}: its run config")
    except LMTrainError as err:
        log.warning("%s; it is copied as is, and eval of the export refuses it alike", err)
    refuse_slow(loaded.tokenizer, source)
    adapter_folder = not merge
    if adapter_folder and not lora.is_adapted(loaded.model):
        raise LMTrainError(
            f"merge=false writes LoRA adapters alone, but ckpt_path={source!r} holds a whole model "
            "(trained without model/peft=lora): drop merge=false"
        )
    if (spoilt := non_finite_weight(loaded.model)) is not None:  # generate's failure is no hint
        raise LMTrainError(
            f"ckpt_path={source!r} holds NaN or inf weights ({spoilt}): export a checkpoint of "
            "the run from before it diverged, such as its best-*.ckpt"
        )
    info = {**loaded.info, **final_metrics(source, loaded.info, loaded.run_config)}
    if adapter_folder:  # the base as it trained: its config.json may not be that
        info = with_base_config(info, loaded.model)
    if merge:
        loaded.model = lora.in_float32(loaded.model)
    # The logits the folder must give: the model as trained, before any merge.
    expected = probe_logits(loaded.model) if verify else None
    if merge:
        loaded.model = lora.merged(loaded.model)
    generation_config = tried_generation_config(loaded, generation or {})

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    made: list[Path] = []
    try:
        made = make_parents(target)
        remove_dead_leftovers(target)
        tmp.mkdir()
    except OSError as err:
        remove_if_empty(made)
        raise unwritable(out_dir, err) from None
    lock = hold_lock(tmp)
    exported = False
    try:
        try:
            plain = write_folder(tmp, loaded, info, generation_config, source)
            title = hub_repo(model_name) or str(target)  # what from_pretrained can load
            run_config = scrub(loaded.run_config)
            card = model_card(
                loaded, run_config, info, model_name, license, title, adapter_folder, plain
            )
            card.save(tmp / "README.md")
            record_files(tmp)
            apply_umask(tmp)
        except OSError as err:
            raise unwritable(out_dir, err) from None
        if expected is not None:
            verify_folder(tmp, loaded, expected, info.get("lora"))
        with swap_lock(target):  # what another export put there meanwhile is checked too
            checked_out_dir(out_dir, source, root_dir, overwrite)
            kept = carry_over(target, tmp, out_dir)  # a previous export's .git/, notes: kept
            try:
                replace_folder(tmp, target)
            except OSError as err:
                raise unwritable(out_dir, err) from None
            exported = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            os.close(lock)
        if not exported:
            remove_if_empty(made)
    log.info("Exported %s to %s", source, target)
    if kept:
        log.info("Kept what the previous export's folder held besides it: %s", ", ".join(kept))
    return target


def tried_generation_config(
    loaded: LoadedModel, settings: dict[str, Any]
) -> GenerationConfig | None:
    """The generation config to save with the model (None for an adapter folder, which has
    none), once a plain `model.generate(ids)` has run with it for one token.

    transformers validates some settings only when it saves them (after the model is loaded: a
    traceback) and others only in `generate` (temperature=-1, num_beams=0 were saved and broke
    every plain `model.generate` of the export): one token of the real thing, before anything is
    written, catches both. Greedy decoding drops the settings only sampling reads; the length is
    bounded by `length_settings`.
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    if lora.is_adapted(model):
        return None
    shown = ", ".join(f"generation.{k}={json.dumps(v, default=str)}" for k, v in settings.items())
    settings = dict(settings)
    if not settings.get("do_sample"):
        settings = {k: v for k, v in settings.items() if k not in SAMPLING_ONLY}
    settings = length_settings(settings, context_length(model.config), loaded.run_config)
    ids = probe_ids(model)[:, :4].to(model.device)
    try:
        config = GenerationConfig(
            **settings,
            bos_token_id=model.config.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
        config.validate(strict=True)
        trial = copy.deepcopy(config)  # one new token (max_length alone: no warning of both)
        trial.max_new_tokens, trial.max_length = None, ids.shape[1] + 1
        # generate fills what the trial leaves unset from the model's own generation config: a
        # re-exported folder's max_new_tokens=200 ran 200 tokens, with its other settings.
        source_defaults, model.generation_config = model.generation_config, GenerationConfig()
        try:
            with torch.inference_mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=trial)
        finally:
            model.generation_config = source_defaults
    except Exception as err:  # any setting transformers takes, any way it refuses it
        why = " ".join(line.strip(" -") for line in str(err).splitlines() if line.strip())
        raise LMTrainError(
            f"model.generate fails with {shown} ({type(err).__name__}: {why or first_line(err)}): "
            "change or drop the generation setting it names"
        ) from None
    return config


def unwritable(out_dir: str, err: OSError) -> LMTrainError:
    """The refusal of an out_dir that the file system does not let us create or fill (read-only,
    no permission, disk full)."""
    where = f": {err.filename}" if err.filename else ""
    advice = (
        "free space on that disk, or pass an out_dir on another one"
        if err.errno in NO_SPACE  # not a matter of permissions: "writable" would mislead
        else "pass a writable out_dir"
    )
    return LMTrainError(
        f"out_dir={out_dir} cannot be created or written ({err.strerror or err}{where}): {advice}"
    )


def write_folder(
    folder: Path,
    loaded: LoadedModel,
    info: dict[str, Any],
    generation: GenerationConfig | None,
    source: str,
) -> bool:
    """save_pretrained for model and tokenizer (`save_tokenizer`: one that, called plainly,
    encodes as training did; False when it cannot be), then the generation config (None: an
    adapter folder, which has none) and meta, with the digest of the tokenizer as saved. A LoRA
    model (not merged) writes peft's adapter folder: adapter_config.json and the adapters."""
    model = loaded.model
    config = model.config
    if generation is not None:
        model.generation_config = generation
    # The code an `auto_map` names is never copied (nor run): the export must not ask for it.
    config.__dict__.pop("auto_map", None)
    try:
        model.save_pretrained(folder)
    except SafetensorError as err:  # its Rust writer's I/O errors (disk full) are no OSError
        if (found := re.search(r"I/O error: .*\(os error (\d+)\)", str(err))) is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from None
    digest, plain = save_tokenizer(folder, loaded.tokenizer, context_length(config))
    run_config = scrub(loaded.run_config)
    meta = {"run_config": run_config, "info": info, "ckpt_path": source}
    meta[DIGEST_KEY] = digest  # loading checks it: no other tokenizer
    (folder / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return plain


def probe_ids(model: torch.nn.Module) -> torch.Tensor:
    """16 token ids spread over the vocabulary: what the export's check feeds both models."""
    # The table's rows: peft's LoRA layer on an embedding is no nn.Embedding (no num_embeddings).
    vocab = model.get_input_embeddings().weight.shape[0]
    return (torch.arange(16) * 7919 % vocab).unsqueeze(0)


@torch.inference_mode()
def probe_logits(model: torch.nn.Module) -> torch.Tensor:
    """The logits of `probe_ids` (a LoRA model's before its adapters are merged)."""
    return model(input_ids=probe_ids(model).to(model.device)).logits.cpu()


@torch.inference_mode()
def verify_folder(
    folder: Path, loaded: LoadedModel, expected: torch.Tensor, recorded: Any = None
) -> None:
    """Reload the folder as its users will (transformers alone, or lmtrain's reader of an
    adapter folder, given what its lmtrain.json records: `recorded`) and check it is the same
    model (`expected`: `probe_logits` of the checkpoint's) and tokenizer (`check_encoding`).

    Another model is a bug in the export (not the user's input), so it raises a plain error.
    """
    if (folder / "adapter_config.json").is_file():
        model = load_adapter_folder(folder, recorded)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False).eval()
    ids = probe_ids(loaded.model)
    if not torch.allclose(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"the export in {folder} gives other logits than the checkpoint")
    check_encoding(folder, loaded.tokenizer, probe_text(loaded.tokenizer, ids))
    if loaded.model.config.tie_word_embeddings and not tied(model):
        raise RuntimeError(f"the export in {folder} lost the tied input/output embeddings")


def tied(model: torch.nn.Module) -> bool:
    """Whether the output layer shares the input embedding's weight tensor."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight
