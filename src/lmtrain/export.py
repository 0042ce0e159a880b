"""Export a checkpoint as a plain Hugging Face folder: `python -m lmtrain.export ckpt_path=<.ckpt>
out_dir=<folder>`.

The folder is what `save_pretrained` writes for the model (safetensors weights under the plain HF
names, config, generation config) and the tokenizer (always a fast tokenizer), plus a model card
(README.md, a `huggingface_hub.ModelCard`: see `lmtrain.models.model_card`) and `lmtrain.json`
(the run config, secrets removed, and what training reached). So
`AutoModelForCausalLM.from_pretrained(folder)` loads it with no lmtrain installed, and lmtrain's
own tools (eval, generate, fine-tuning with model=pretrained) take it like a checkpoint.
A LoRA checkpoint (model/peft=lora) is merged into its base model (peft's `merge_and_unload`);
with `merge=false` the folder holds the adapters alone, as peft writes them (adapter_config.json,
adapter_model.safetensors), plus the tokenizer, card and lmtrain.json: `PeftModel.from_pretrained(
AutoModelForCausalLM.from_pretrained(<base>), folder)` loads it.
It is written under a temporary name, reloaded and checked against the checkpoint's logits, and
only then renamed into place. The only folder it ever replaces is a previous export, and only with
overwrite=true (see `lmtrain.utils.export_dir`): never a run, the checkpoint or user files; even
then only the files an export writes are replaced, and the rest (a hub clone's `.git/`, notes)
is kept.
"""

from __future__ import annotations

from lmtrain.utils import gc_pause, import_env

# Before the libraries' imports read RANK and LOCAL_RANK as numbers (lmtrain.utils.import_env).
import_env.exit_on_unreadable_rank()

# The libraries import with the garbage collector paused (lmtrain.utils.gc_pause).
with gc_pause.paused_for_imports():
    import logging
    import sys
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    import hydra
    from omegaconf import DictConfig
    from transformers import GenerationConfig

    from lmtrain.models.checkpoint import resolve_model_path
    from lmtrain.models.export_folder import SAMPLING_ONLY, export_checkpoint
    from lmtrain.utils.checks import Problems
    from lmtrain.utils.composed_config import resolved_run_folder
    from lmtrain.utils.config_checks import check_export_config, check_samples, plain
    from lmtrain.utils.export_dir import out_dir_path, out_dir_problem
    from lmtrain.utils.group_overrides import refuse_null_groups
    from lmtrain.utils.interrupt_exit import interrupt_is_one_line
    from lmtrain.utils.redact import scrub
    from lmtrain.utils.task import task_wrapper

__all__ = ["export", "export_checkpoint", "scrub"]

log = logging.getLogger(__name__)

# What the export itself sets in generation_config.json, from the tokenizer and the model.
SET_BY_EXPORT = ("bos_token_id", "eos_token_id", "pad_token_id", "transformers_version")


@task_wrapper
def export(cfg: DictConfig) -> Path:
    """Write the exported folder for `cfg.ckpt_path` to `cfg.out_dir`; return its path."""
    resolved_run_folder(cfg)  # first: a composed config without it in one line that says so
    out_dir, generation = checked_settings(cfg)  # every setting, before any work
    source = resolve_model_path(cfg.ckpt_path, cfg.paths.output_dir)
    return export_checkpoint(
        source,
        out_dir,
        root_dir=cfg.paths.root_dir,
        overwrite=cfg.overwrite,
        verify=cfg.verify,
        generation=generation,
        model_name=cfg.model_name,
        license=cfg.license,
        merge=cfg.get("merge", True),
    )


def checked_settings(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """out_dir and the generation config's settings, each problem with them in one line, before
    the checkpoint is read: `out_dir=null` exported into a folder named `None`, and a bad
    `generation.*` failed after loading the model, or was saved and failed in `model.generate`."""
    problems = Problems()
    check_export_config(cfg, problems)  # overwrite=maybe must not read as yes
    out_dir = out_dir_path(cfg.get("out_dir"))
    if out_dir is None:
        problems.add(out_dir_problem(cfg.get("out_dir")))
    for key in ("model_name", "license"):  # the card's heading and metadata: text, or null
        value = cfg.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            spelt = str(value).lower() if isinstance(value, bool) else value
            problems.add(
                f"{key}={value!r} is not text: pass {key}=<text>, quoted when Hydra reads it as "
                f"a value ({key}=\"'{spelt}'\"), or null for none"
            )
    generation = cfg.get("generation")
    generation = plain(generation) if isinstance(generation, DictConfig) else generation
    settings = generation_settings(generation, problems)
    problems.raise_if_any()
    return out_dir or "", settings


def generation_settings(generation: Any, problems: Problems) -> dict[str, Any]:
    """export.yaml's `generation:` as the settings for generation_config.json; what is wrong with
    them goes to `problems`, keys as typed (`generation.top_k`).

    Checked before the checkpoint is read: do_sample=false (beside export.yaml's temperature)
    and max_new_tokens=0 failed after loading the model, as a traceback, and temperature=-1 was
    saved and broke every plain `model.generate(ids)`. The sampling values are checked by the
    check lmtrain.generate and the samples callback use (config_checks.check_samples); the
    export tries the rest with one token of `model.generate` (export_folder). null leaves a
    setting to transformers; do_sample=false drops the settings only sampling reads.
    """
    if generation is None:
        return {}
    if not isinstance(generation, Mapping):
        problems.add(
            f"generation={generation!r} is not a group of settings: pass generation.<setting>="
            "<value>, such as generation.do_sample=false"
        )
        return {}
    settings = {str(k): v for k, v in generation.items() if v is not None}
    known = {k for k in vars(GenerationConfig()) if not k.startswith("_")}
    for name in sorted((set(settings) - known) | (set(settings) & set(SET_BY_EXPORT))):
        why = "is not a setting of transformers' GenerationConfig: drop it, or check its spelling"
        if name in SET_BY_EXPORT:
            why = "is set by the export itself (from the model and tokenizer): drop it"
        problems.add(f"generation.{name}={settings[name]!r} {why}")
    do_sample = settings.get("do_sample", False)
    if not problems.boolean("generation.do_sample", do_sample):
        return {}
    if not do_sample and (dropped := [k for k in SAMPLING_ONLY if k in settings]):
        log.info("generation.do_sample=false: %s not saved (greedy reads none)", ", ".join(dropped))
        settings = {k: v for k, v in settings.items() if k not in SAMPLING_ONLY}
    check_samples(settings, "generation", problems, greedy=not do_sample)
    top_p = settings.get("top_p")
    problems.number("generation.top_p", top_p, low=0, high=1, low_open=True, optional=True)
    return settings


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    with gc_pause.without_final_gc(), interrupt_is_one_line():
        refuse_null_groups(sys.argv[1:])  # `logger=null` was a traceback inside Hydra
        main()
