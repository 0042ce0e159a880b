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
overwrite=true (see `lmtrain.utils.export_dir`): never a run, the checkpoint or user files.
"""

from __future__ import annotations

# Before the libraries below: they import with the garbage collector paused.
from lmtrain.utils import gc_pause

# isort: split

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lmtrain.models.checkpoint import resolve_model_path
from lmtrain.models.export_folder import export_checkpoint, scrub
from lmtrain.utils.config_checks import check_export_config
from lmtrain.utils.task import task_wrapper

gc_pause.resume()

__all__ = ["export", "export_checkpoint", "scrub"]


@task_wrapper
def export(cfg: DictConfig) -> Path:
    """Write the exported folder for `cfg.ckpt_path` to `cfg.out_dir`; return its path."""
    check_export_config(cfg)  # overwrite=maybe must not read as yes: checked before any work
    source = resolve_model_path(cfg.ckpt_path, cfg.paths.output_dir)
    return export_checkpoint(
        source,
        str(cfg.out_dir),
        root_dir=cfg.paths.root_dir,
        overwrite=cfg.overwrite,
        verify=cfg.verify,
        generation=OmegaConf.to_container(cfg.generation, resolve=True),
        model_name=cfg.model_name,
        license=cfg.license,
        merge=cfg.get("merge", True),
    )


@hydra.main(version_base="1.3", config_path="../../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    with gc_pause.without_final_gc():
        main()
