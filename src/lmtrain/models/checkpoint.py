"""Our checkpoint format: what `CausalLMModule`'s checkpoints hold beyond Lightning's (under
`CHECKPOINT_KEY`: the HF config, tokenizer files and run config, so eval, generate and export need
nothing but the file), and loading them (where they live: `lmtrain.models.checkpoint_paths`).

Lightning restores a checkpoint into a running Trainer; these helpers turn `ckpt_path=last` into
a file, refuse a missing, corrupt or crafted file in one line before any work starts (every read
goes through `lmtrain.utils.safe_load`), and rebuild the plain HF model and tokenizer. Exported
folders load through the same door (`load_model` hands them to `lmtrain.models.model_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError, RankAgreedError
from lmtrain.models import lora
from lmtrain.models.checkpoint_contents import (
    CHECKPOINT_KEY,
    check_contents,
    check_same_optimizer,
    check_same_tokenizer,
    check_same_windows,
    model_differences,
    model_from_contents,
    tokenizer_from_files,
)
from lmtrain.models.checkpoint_paths import (
    locate_checkpoint,
    refuse_dirpath_left_out,
    refuse_lightning_keyword,
    refuse_special_file,
)
from lmtrain.models.model_folder import TOKENIZER_FILES as TOKENIZER_FILES  # re-exported
from lmtrain.models.model_folder import LoadedModel, model_from_folder, refuse_run_folder
from lmtrain.models.resume_refusals import launch_folder_first, resumed_model_refusal
from lmtrain.utils.checkpointless_run import RAN_WITHOUT, ran_without_checkpoints
from lmtrain.utils.damaged_checkpoint import instead
from lmtrain.utils.safe_load import check_dcp_folder, load_torch_file
from lmtrain.utils.sharded_layout import SHARDED_META_FILE, is_sharded_checkpoint

# The other commands, whose run folders hold <name>.log and never a checkpoint.
OTHER_TOOLS = ("eval", "generate", "export")


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """`last` means this run folder's `checkpoints/last.ckpt`; any other value must be a file, or a
    sharded checkpoint folder (`trainer=fsdp` writes `last.ckpt/` with the shards and a
    `meta.pt`). Either is read through `safe_load` first.

    Lightning itself would silently start from scratch when `last` finds nothing; a researcher
    who asked to resume wants to hear that instead.
    """
    if not ckpt_path:
        return None
    path = locate_checkpoint(ckpt_path, output_dir)
    if ckpt_path == "last":
        if not (path.is_file() or is_sharded_checkpoint(path)):
            refuse_dirpath_left_out(Path(output_dir))
            saved = path.parent.is_dir() and any(
                not p.name.startswith(".") for p in path.parent.iterdir()
            )  # a name that starts with "." is a save cut short (written, then renamed)
            logs = [t for t in OTHER_TOOLS if (Path(output_dir) / f"{t}.log").is_file()]
            tool = logs[0] if logs else None
            if not saved and tool:  # Hydra names its log after the command
                raise LMTrainError(
                    f"ckpt_path=last: {output_dir} is a folder of lmtrain.{tool} ({tool}.log), "
                    "not a training run: pass hydra.run.dir=<the training run's folder>"
                )
            if not saved and ran_without_checkpoints(output_dir):
                raise LMTrainError(
                    f"ckpt_path=last: the run in {output_dir} {RAN_WITHOUT}: start a new run "
                    "(another hydra.run.dir, or overwrite_run=true to replace its files)"
                )
            if not saved and started_here(Path(output_dir)):
                raise LMTrainError(
                    f"ckpt_path=last: the run in {output_dir} saved no checkpoint (it stopped "
                    "before its first save, at its first validation or scheduled save): "
                    "nothing to resume from; start it again with overwrite_run=true (replaces "
                    "its files), or in another hydra.run.dir"
                )
            raise LMTrainError(  # a new folder, or one whose run stopped before training
                f"ckpt_path=last found no {path} (no run saved a checkpoint there): pass the "
                "folder of a run that did with hydra.run.dir=<run folder>, or ckpt_path=<file>"
            )
        if path.name != "last.ckpt" and not path.name.startswith("."):
            rank_zero_warn(
                f"{path.parent / 'last.ckpt'} is missing (the run stopped before it saved one, "
                f"or saves none): resuming from {path.name}, the newest checkpoint there. "
                "Lightning keeps the file a run resumed from, beside the later best ones"
            )
    else:
        if path.is_dir() and not is_sharded_checkpoint(path):
            raise LMTrainError(
                f"ckpt_path={ckpt_path!r} is a folder without {SHARDED_META_FILE}: pass a .ckpt "
                "file, or a sharded checkpoint folder (trainer=fsdp)"
            )
        if not (path.is_file() or path.is_dir()):
            refuse_lightning_keyword(ckpt_path, output_dir)  # `best`: Lightning's, not ours
            refuse_special_file(ckpt_path, path)  # /dev/null, a FIFO: there, but no file
            raise LMTrainError(f"ckpt_path={ckpt_path!r} does not exist: pass a .ckpt file")
    checkpoint_meta(path)  # fail now, not after data preparation, if the file is broken
    if is_sharded_checkpoint(path):
        # Read again at resume by the strategy, through the same restricted reader; checked
        # here so that a crafted folder stops before any work starts.
        check_dcp_folder(path)
    return str(path)


def check_strategy_reads(ckpt_path: str | Path, sharded_strategy: bool) -> None:
    """Refuse a sharded checkpoint folder for a strategy that reads only files (one device,
    DDP): Lightning would fail deep inside with IsADirectoryError."""
    if is_sharded_checkpoint(ckpt_path) and not sharded_strategy:
        raise RankAgreedError(
            f"ckpt_path={str(ckpt_path)!r} is a sharded checkpoint folder, which only "
            "trainer=fsdp reads: resume with trainer=fsdp (any number of devices), or merge it "
            f"into one file with `python -m lmtrain.strategies consolidate {ckpt_path}` and "
            "resume from that file"
        )


def started_here(output_dir: Path) -> bool:
    """Whether an earlier run started in `output_dir`: more in it than what this command wrote
    before any check (Hydra's `.hydra/` and log file, the run folder's lock and its owner)."""
    if not output_dir.is_dir():
        return False
    own = (".hydra", ".lock", ".lock.owner")
    return any(p.name not in own and p.suffix != ".log" for p in output_dir.iterdir())


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (a file), or everything but the tensors (a sharded folder), if
    they are all that resuming training needs."""
    if is_sharded_checkpoint(path):
        meta = read_checkpoint_file(Path(path) / SHARDED_META_FILE)
        return check_contents(meta, path, resume=True, sharded=True)
    return check_contents(read_checkpoint_file(path), path, resume=True)


def read_checkpoint_file(path: str | Path) -> Any:
    """`load_torch_file(path)`, after refusing an empty file (what a copy, sync or download cut
    short leaves; our saves are atomic) in words that say so: torch's speak of mmap and zipfile."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise LMTrainError(
            f"ckpt_path={str(path)!r} is an empty file (0 bytes; a copy or download cut short?): "
            f"copy it again from where it was saved, or {instead(path)}"
        )
    return load_torch_file(path)


def check_same_model(
    ckpt_path: str | Path,
    config: PretrainedConfig,
    max_steps: int | None = None,
    resume: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    windows: dict[str, Any] | None = None,
    optimizer_target: str | None = None,
    freeze: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume a checkpoint of another architecture, size or tokenizer (`tokenizer`,
    this run's: `check_same_tokenizer`), of this run folder on other `windows`
    (`check_same_windows`), of another optimizer or freeze (`optimizer_target` and `freeze`,
    this run's `model.optimizer._target_` and `model.freeze`: `check_same_optimizer`) before
    `trainer.fit`, or one saved past `max_steps` (`trainer.max_steps` counts the run's steps,
    not steps to add: Lightning would stop at once, exit 0 and rewrite the run's metrics). With
    `resume=` (the run folder), the model comes from the run's saved config, so another model
    there means that config was edited, or its relative corpus path was read in another
    working directory: the advice names which (`lmtrain.models.resume_refusals`).

    Lightning would find out only when it loads the state dict, after the data is prepared,
    with a traceback of tensor shapes. The checkpoint's HF config (stored by CausalLMModule)
    is compared with the model this run built; a checkpoint without one is left to Lightning.
    """
    meta = checkpoint_meta(ckpt_path)
    step = meta.get("global_step")
    if max_steps is not None and max_steps >= 0 and isinstance(step, int) and max_steps < step:
        raise LMTrainError(
            f"trainer.max_steps={max_steps} is below step {step}, where ckpt_path="
            f"{str(ckpt_path)!r} was saved: trainer.max_steps counts every step of the run, not "
            f"the steps to add; pass a value above {step}"
        )
    extra = meta.get(CHECKPOINT_KEY) or {}
    check_same_windows(ckpt_path, extra.get("run_config"), windows or {})
    check_same_optimizer(ckpt_path, extra.get("run_config"), optimizer_target, freeze)
    saved = extra.get("hf_config")
    if not saved:
        return
    differences = model_differences(saved, config.to_dict())
    if not differences:
        with launch_folder_first(resume, meta, "another tokenizer"):
            check_same_tokenizer(ckpt_path, extra.get("tokenizer_files"), tokenizer)
        return
    listed = ", ".join(f"{k}={a!r} in the checkpoint but {b!r} here" for k, a, b in differences)
    keys = {key for key, _, _ in differences}
    hint = " (vocab_size comes from data.tokenizer)" if "vocab_size" in keys else ""
    if resume:
        raise resumed_model_refusal(resume, meta, listed, keys)
    raise LMTrainError(
        f"ckpt_path={str(ckpt_path)!r} holds another model: {listed}: resume with the "
        f"checkpoint's model settings (model=..., model.config.<key>=<value>){hint}, or drop "
        "ckpt_path to start from scratch"
    )


def resolve_model_path(path: str | None, output_dir: str | Path) -> str:
    """For eval, generate and export: `model_path(path)`, a checkpoint file read now (for what
    these tools read, not what resuming needs: `save_weights_only=true` saves are theirs), so a
    broken one stops before any work starts. `output_dir` is unused (`last` is refused here)."""
    found = model_path(path)
    if Path(found).is_file():
        check_contents(read_checkpoint_file(found), found, resume=False)
    return found


def model_path(path: str | Path | None) -> str:
    """`path` with `~` expanded, if it is a `.ckpt` file or a folder with `config.json` (an
    `lmtrain.export` folder, or any `save_pretrained` folder) or peft's `adapter_config.json`:
    the CLI and `load_model` from Python refuse the same paths in the same words."""
    given = None if path is None else str(path)
    if given == "last":
        # train resumes `last` in its run folder; these tools write one of their own.
        raise LMTrainError(
            "ckpt_path=last only resumes training (lmtrain.train): pass the checkpoint itself, "
            "ckpt_path=<run folder>/checkpoints/last.ckpt, or an exported folder"
        )
    file = Path(given or "").expanduser()
    if given and is_sharded_checkpoint(file):
        raise LMTrainError(
            f"ckpt_path={given!r} is a sharded checkpoint folder: merge it into one file first "
            f"with `python -m lmtrain.strategies consolidate {given}` and pass that file"
        )
    if given and file.is_dir():
        refuse_run_without_last(file)
        refuse_run_folder(file)
        if not any((file / name).is_file() for name in ("config.json", "adapter_config.json")):
            raise LMTrainError(
                f"ckpt_path={given!r} is a folder without config.json: pass a .ckpt file or a "
                "folder written by lmtrain.export (or save_pretrained)"
            )
        return str(file)
    if not given:  # null on the command line, or '' (None would be echoed as Python's None)
        raise LMTrainError("ckpt_path is not set: pass a .ckpt file or an exported folder")
    if not file.is_file():
        refuse_special_file(given, file, "a .ckpt file or an exported folder")
        raise LMTrainError(
            f"ckpt_path={given!r} does not exist: pass a .ckpt file or an exported folder"
        )
    return str(file)


def refuse_run_without_last(folder: Path) -> None:
    """A run folder without last.ckpt, named by what it holds (`refuse_run_folder` names last)."""
    saved = folder / "checkpoints"
    if not saved.is_dir() or (saved / "last.ckpt").exists() or (folder / "config.json").exists():
        return
    held = ", ".join(sorted(repr(p.name) for p in saved.glob("*.ckpt") if p.name[0] != "."))
    holds = (  # a name that starts with "." is a save cut short
        f"no last.ckpt: pass one of its checkpoints in {str(saved)!r}: {held}"
        if held
        else "no checkpoint yet (its run stopped before its first save, or has not reached it): "
        f"pass {str(saved / 'last.ckpt')!r} once it is saved, or another model"
    )
    raise LMTrainError(f"ckpt_path={str(folder)!r} is a training run's folder that holds {holds}")


def checkpoint_tokenizer(path: str | Path) -> PreTrainedTokenizerBase | None:
    """The tokenizer a checkpoint file carries, or None (a file without lmtrain's part), read
    as every tool reads a checkpoint: a broken or crafted file stops here in one line."""
    extra = read_checkpoint_file(path).get(CHECKPOINT_KEY) or {}
    files = extra.get("tokenizer_files")
    return tokenizer_from_files(files, path) if files else None


def load_model(path: str | Path) -> LoadedModel:
    """The model at `path`, a Lightning checkpoint or an HF folder, ready for inference. The path
    is checked as the CLI checks `ckpt_path=` (`model_path`): a folder of checkpoints was told to
    take in tokenizer files, and `~/x` was not expanded."""
    found = model_path(path)
    if Path(found).is_dir():
        return model_from_folder(found)
    return checkpoint_model(found)


def checkpoint_model(path: str | Path) -> LoadedModel:
    """A checkpoint's HF model, tokenizer, run config and what training reached.

    Weight names lose the module's `model.` prefix and any `_orig_mod.` that `torch.compile`
    wrappers add, so they are the plain HF names. A LoRA checkpoint gives peft's adapted model:
    its base read again, its adapters from the checkpoint (`lmtrain.models.lora`).
    """
    checkpoint = check_contents(read_checkpoint_file(path), path, resume=False)
    extra = checkpoint[CHECKPOINT_KEY]
    prefix = "model."
    state = {
        k[len(prefix) :].replace("_orig_mod.", ""): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(prefix)
    }
    adapters = extra.get(lora.LORA_KEY)
    if adapters:
        model = lora.model_from_checkpoint(adapters, state, path, extra.get("hf_config"))
    else:
        model = model_from_contents(extra["hf_config"], state, path)
    info = {
        "global_step": checkpoint.get("global_step"),
        "tokens_seen": extra.get("tokens_seen"),
        "val_loss": extra.get("val_loss"),
    }
    if adapters:  # for the model card and lmtrain.json
        info["lora"] = adapters
    return LoadedModel(
        model,
        tokenizer_from_files(extra["tokenizer_files"], path),
        extra.get("run_config") or {},
        info,
    )
