"""Every numeric and enumerated setting of each entry point, checked before work starts.

Hydra composes whatever the command line says (`model.optimizer.lr=abc`, `data.block_size=-3`),
and the first use of a bad value is often minutes later, deep in a library, as a traceback (or,
worse, a run that trains on nonsense). Each `check_*` reads the composed config, records every
problem (lmtrain.utils.checks.Problems) and raises one line listing them all. Settings that
their own component checks (a source's paths, a tokenizer's kind) are checked there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lmtrain.data.tokenizers import check_tokenizer_config
from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.callback_checks import (
    check_callbacks,
    check_logger,
    check_tags,
    warn_unvalidated_early_stopping,
)
from lmtrain.utils.checks import Problems, check_run_references, check_task_name
from lmtrain.utils.config_keys import (
    EVAL_KEYS,
    EXPORT_KEYS,
    GENERATE_KEYS,
    check_config_names,
    check_top_level_keys,
)
from lmtrain.utils.eval_checks import check_eval_tokenizer, check_eval_val_limit
from lmtrain.utils.filename_fields import check_filename_fields
from lmtrain.utils.metric_names import check_metric_names
from lmtrain.utils.model_checks import (
    check_model,
    check_seq_len_warmup,
    tokenizer_is_a_refused_run,
    warn_foreign_tokenizer,
)
from lmtrain.utils.removed_nodes import EVAL_NODES, TRAIN_NODES, refuse_removed_nodes
from lmtrain.utils.run_folder_checks import run_folder_problems
from lmtrain.utils.strategy_checks import check_sharded_model
from lmtrain.utils.target_checks import check_targets
from lmtrain.utils.trainer_checks import (
    check_cpu_attention,
    check_fp16_optimizer_eps,
    check_run_length,
    check_trainer,
    check_validation_trainer,
    warn_long_warmup,
)
from lmtrain.utils.wandb_run import is_wandb_entry

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# lightning.seed_everything seeds numpy too, which takes 0 to 2**32 - 1 (and raises otherwise).
SEED_MAX = 2**32 - 1
# OmegaConf's marker of a mandatory value (`key: ???`) that the config leaves to the user.
UNSET = "???"
# What to pass for the mandatory values our configs leave unset (anything else: `<value>`).
UNSET_HINTS = {
    "model.pretrained": "<folder or hub id>",
    "ckpt_path": "<.ckpt file or folder>",
    "out_dir": "<folder>",
}
# Sources that need data.source.path: they iterate over it (None was a TypeError). Shakespeare's
# takes null (it downloads the text).
PATH_SOURCES = ("TextFilesSource", "HFDatasetSource")


def plain(cfg: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """A composed config (or one of its nodes) as plain values, interpolations resolved."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
        except InterpolationResolutionError as err:  # `lr=${oops}`: a traceback in this check
            raise LMTrainError(
                f"{err.full_key} cannot be resolved ({first_line(err)}): fix the ${{...}} it "
                "holds, or pass a plain value"
            ) from None
    return dict(cfg)


def check_train_config(cfg: DictConfig) -> None:
    refuse_removed_nodes(cfg, TRAIN_NODES)  # `~model`: the checks below read it as a mapping
    problems = Problems()
    check_unset(cfg, problems)
    check_config_names(cfg, problems)  # keys nothing reads, groups without a _target_
    check_targets(cfg, problems)  # model and data are lmtrain's classes or subclasses
    callbacks, trainer = plain(cfg.get("callbacks")), plain(cfg.get("trainer"))
    ours = OmegaConf.select(cfg, "model._target_") == "lmtrain.models.module.CausalLMModule"
    check_metric_names(callbacks, cfg.get("optimized_metric"), problems, ours, trainer)
    check_filename_fields(callbacks, problems)  # `{val_loss}` in a checkpoint's name: 0
    check_callbacks(callbacks, problems)
    tags, loggers = cfg.get("tags"), plain(cfg.get("logger")) or {}
    tags = OmegaConf.to_container(tags, resolve=True) if isinstance(tags, ListConfig) else tags
    wandb = any(isinstance(e, Mapping) and is_wandb_entry(e) for e in loggers.values())
    check_tags(tags, problems, wandb)
    for name, entry in loggers.items():
        if not isinstance(entry, Mapping):
            continue
        check_logger(name, entry, problems, is_wandb_entry(entry))
        if is_wandb_entry(entry) and entry.get("tags") != tags:  # its own, apart from `tags`
            check_tags(entry.get("tags"), problems, True, f"logger.{name}.tags")
    problems.integer("seed", cfg.get("seed"), 0, optional=True, maximum=SEED_MAX)
    problems.integer("global_batch_size", cfg.get("global_batch_size"), 1, optional=True)
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1)
    if cfg.get("global_batch_size") and accumulate not in (1, None):  # it sets accumulation
        problems.add(
            f"global_batch_size={cfg.global_batch_size} and trainer.accumulate_grad_batches="
            f"{accumulate} both set gradient accumulation: drop one of them"
        )
    # bool("no") is True: a yes/no setting that guards a run's files takes only true or false.
    problems.boolean("overwrite_run", cfg.get("overwrite_run", False))
    check_run_references(cfg, problems)
    check_task_name(cfg.get("task_name"), problems)
    check_paths(cfg, problems)
    model, trainer = plain(cfg.get("model")), plain(cfg.get("trainer"))
    data = plain(cfg.get("data"))
    check_data(data, problems, tokenizer=not tokenizer_is_a_refused_run(model, data))
    check_model(model, problems, (trainer or {}).get("max_steps"))
    check_seq_len_warmup(model, cfg.get("data", {}).get("block_size"), problems)
    check_trainer(trainer, problems)
    check_run_length(trainer, model, problems)
    check_fp16_optimizer_eps(trainer, model, problems)  # AdamW's eps in float16
    check_cpu_attention(trainer, model, problems)  # flex_attention: no backward on the CPU
    check_sharded_model(trainer or {}, model, problems)  # trainer=fsdp: no parts, no LoRA
    check_samples(plain(cfg.get("samples")), "samples", problems)
    problems.raise_if_any()
    warn_foreign_tokenizer(model, data)
    warn_unvalidated_early_stopping(callbacks or {}, trainer or {})
    if cfg.get("task_name") != "debug":  # debug=limit, overfit: short on purpose
        warn_long_warmup(trainer, model)


def check_paths(cfg: DictConfig, problems: Problems) -> None:
    """An empty folder in `paths`: the folders under it would be joined onto nothing, so
    `paths.data_dir=''` put the token cache at `/cache`. And the run folder's
    (run_folder_checks)."""
    problems.extend(run_folder_problems(cfg))  # a debug run into a run's, a split run
    for key in ("root_dir", "data_dir", "log_dir"):
        try:
            value = OmegaConf.select(cfg, f"paths.{key}")
        except Exception:  # an interpolation only a job resolves: not empty
            continue
        if isinstance(value, str) and not value.strip():
            problems.add(
                f"paths.{key}='' names no folder (what goes under it would start at the file "
                "system's root): leave it as configured, or pass a folder"
            )
    check_launch_directory(problems, "data.source.path, paths.*, data.cache_dir")


def check_launch_directory(problems: Problems, paths: str) -> None:
    """hydra.job.chdir=true: each relative path (`paths`, the entry point's) would resolve in
    the run folder. Training built its token cache anew in every run folder; export wrote
    out_dir=myexport under logs/export/runs/<time>/, and generate found no ckpt_path=my.ckpt."""
    if HydraConfig.initialized() and HydraConfig.get().job.get("chdir"):
        problems.add(
            f"hydra.job.chdir=true runs the job in its run folder, where relative paths ({paths}) "
            "would resolve: lmtrain keeps the launch directory; drop hydra.job.chdir=true"
        )


def check_unset(cfg: DictConfig, problems: Problems) -> None:
    """Mandatory values left unset (`???`): `data=text_files` without data.source.path,
    `model=pretrained` without model.pretrained. Their first use, in instantiate, was a
    traceback. Raises at once when there are any: the checks after this one would read `???` as
    the value (and some cannot read it where a mapping belongs)."""
    # Not OmegaConf.missing_keys: it resolves interpolations, and raises on one that points at
    # a missing value (`${data.source.path}`); unresolved, `???` stays a string.
    entries = OmegaConf.to_container(cfg, resolve=False)
    entries.pop("hydra", None)  # type: ignore[union-attr]  # Hydra's own node, in tests
    for key in unset_keys(entries, ""):
        hint = UNSET_HINTS.get(key, "<value>")
        if key == "data.source.path":
            hint = source_path_hint(OmegaConf.select(cfg, "data.source._target_"))
        problems.add(f"{key} is not set: pass {key}={hint}")
    problems.raise_if_any()
    # Every `${...}` resolves: `seed=${oops}` was a traceback at its first read (`plain` names it).
    plain(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))


def unset_keys(node: Any, path: str) -> list[str]:
    """The full keys under `node` (a plain container) whose value is OmegaConf's `???`."""
    if isinstance(node, Mapping):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
    else:
        return [path] if node == UNSET else []
    return [key for sub, value in items for key in unset_keys(value, sub)]


def source_path_hint(target: Any) -> str:
    """What data.source.path takes: a hub id for a Hugging Face dataset, else local text."""
    return "<hub id, folder or file>" if "HFDataset" in str(target) else "<file, folder or glob>"


def check_eval_config(cfg: DictConfig) -> None:
    refuse_removed_nodes(cfg, EVAL_NODES)
    problems = Problems()
    check_unset(cfg, problems)
    check_top_level_keys(cfg, problems, EVAL_KEYS, "lmtrain.eval")
    check_task_name(cfg.get("task_name", "eval"), problems)  # configs/eval.yaml's, if none
    check_launch_directory(problems, "ckpt_path, data.source.path, paths.*")
    if cfg.get("trainer") is not None:  # the precision and Lightning's yes/no settings
        check_validation_trainer(plain(cfg.trainer), problems)
        check_eval_val_limit(cfg.trainer.get("limit_val_batches"), problems)  # ignored
    problems.integer("seed", cfg.get("seed"), 0, optional=True, maximum=SEED_MAX)
    if cfg.get("data") is not None:
        check_data(plain(cfg.data), problems, tokenizer=False)  # the model's own tokenizer
        check_eval_tokenizer(cfg.data, problems)  # so a typed data.tokenizer... is refused
    problems.raise_if_any()


def check_export_config(cfg: DictConfig, problems: Problems | None = None) -> None:
    """Export's yes/no settings; with `problems`, added to those (lmtrain.export's out_dir and
    generation checks), which the caller raises together, so that one command names them all."""
    found = problems if problems is not None else Problems()
    check_unset(cfg, found)
    check_top_level_keys(cfg, found, EXPORT_KEYS, "lmtrain.export")
    check_task_name(cfg.get("task_name", "export"), found)
    check_launch_directory(found, "ckpt_path, out_dir")
    found.boolean("overwrite", cfg.get("overwrite", False))
    found.boolean("verify", cfg.get("verify", True))
    found.boolean("merge", cfg.get("merge", True))
    if problems is None:
        found.raise_if_any()


def check_generate_config(cfg: DictConfig) -> None:
    problems = Problems()
    check_unset(cfg, problems)
    check_top_level_keys(cfg, problems, GENERATE_KEYS, "lmtrain.generate")
    check_task_name(cfg.get("task_name", "generate"), problems)
    check_launch_directory(problems, "ckpt_path, prompt_file")
    problems.integer("seed", cfg.get("seed"), 0, optional=True, maximum=SEED_MAX)
    problems.integer("num_samples", cfg.get("num_samples"), 1)
    problems.boolean("stop_at_eos", cfg.get("stop_at_eos", True))
    greedy = cfg.get("greedy", False)
    if problems.boolean("greedy", greedy):
        check_samples(plain(cfg), "", problems, greedy=greedy)
    problems.number("top_p", cfg.get("top_p"), low=0, high=1, low_open=True, optional=True)
    device = cfg.get("device")
    if not (isinstance(device, str) and DEVICE.fullmatch(device)):
        problems.add(f"device={device!r} is unknown: use auto, cpu, cuda, cuda:<index> or mps")
    prompt = cfg.get("prompt")  # Hydra reads prompt=1.10 as 1.1, and [a,b] as a list
    if prompt is not None and not isinstance(prompt, str):
        problems.add(f"prompt={prompt!r} is not text: quote it, e.g. 'prompt=\"1.10\"'")
    if not isinstance(cfg.get("separator", ""), str):  # joins the samples, after sampling
        problems.add(f"separator={cfg.get('separator')!r} is not text: pass a quoted string")
    problems.raise_if_any()


def check_data(data: dict[str, Any], problems: Problems, tokenizer: bool = True) -> None:
    problems.integer("data.block_size", data.get("block_size"), 1)
    problems.integer("data.batch_size", data.get("batch_size"), 1)
    problems.integer("data.num_workers", data.get("num_workers", 0), 0)
    problems.integer("data.prepare_workers", data.get("prepare_workers"), 1, optional=True)
    problems.number("data.prepare_chunk_mb", data.get("prepare_chunk_mb", 1), low=0, low_open=True)
    # Yes/no settings read with bool(): "no" would read as yes.
    problems.boolean("data.pin_memory", data.get("pin_memory", False))
    source = data.get("source") or {}
    if not isinstance(source, Mapping):
        source = {}
    if "val_fraction" in source:
        problems.number(
            "data.source.val_fraction",
            source["val_fraction"],
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        )
    if "streaming" in source:
        problems.boolean("data.source.streaming", source["streaming"])
    target = str(source.get("_target_"))
    if "path" in source and source["path"] is None and target.endswith(PATH_SOURCES):
        hint = source_path_hint(target)
        problems.add(f"data.source.path=None names no data: pass data.source.path={hint}")
    if tokenizer and isinstance(data.get("tokenizer"), Mapping):
        check_tokenizer_config(data["tokenizer"], problems)


def check_samples(
    samples: dict[str, Any], prefix: str, problems: Problems, greedy: bool = False
) -> None:
    """Sampling settings, under `samples.` (training) or at the top level (generate)."""
    key = f"{prefix}." if prefix else ""
    if prefix:  # generate takes one prompt (or a file), training a list of them
        check_prompts(samples.get("prompts", []), f"{key}prompts", problems)
    problems.integer(f"{key}max_new_tokens", samples.get("max_new_tokens", 1), 1)
    if not greedy:
        temperature = samples.get("temperature", 1.0)
        greedy_hint = "" if prefix else ", or greedy=true"
        problems.number(f"{key}temperature", temperature, low=0, low_open=True, hint=greedy_hint)
    problems.integer(f"{key}top_k", samples.get("top_k"), 1, optional=True)
    if prefix:
        problems.integer(f"{key}every_n_val", samples.get("every_n_val", 1), 1)


def check_prompts(prompts: Any, key: str, problems: Problems) -> None:
    """A list of strings. Hydra reads `[1984]` as a number, and a bare string (`prompts=the`)
    was sampled as one prompt per character."""
    if not isinstance(prompts, list):
        problems.add(
            f"{key}={prompts!r} is not a list of prompts: pass a list, such as "
            f'{key}=\'["def ", "class "]\', or {key}=[] for none'
        )
        return
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            problems.add(f"{key}[{i}]={prompt!r} is not text: quote it, as {key}='[\"{prompt}\"]'")
