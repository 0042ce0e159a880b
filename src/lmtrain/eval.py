"""Evaluate a model: `python -m lmtrain.eval ckpt_path=<.ckpt or exported folder> [data=<corpus>]`.

Reports over the whole val split: val/loss (nats per token), val/ppl and val/bpb (bits per UTF-8
byte), and writes them to the run folder's `metrics.json`. Loss and perplexity depend on the
tokenizer; bits per byte does not, so it compares models with different tokenizers fairly.
The model and tokenizer come from the checkpoint or folder alone, and so do the tokens: the data
config is the one it was trained with (`+data.<key>=<value>` changes one of its settings) unless
`data=...` names another, and either is read with the model's own tokenizer. The run's token cache
is reused when it was made with that tokenizer; otherwise (the corpus changed since training, or
the cache is gone) the corpus is tokenized anew with it, never with a tokenizer rebuilt from today's
text, whose ids would not be the model's.

`tasks=[hellaswag,arc_easy]` also runs EleutherAI's lm-evaluation-harness on the same model in
memory (`lmtrain.benchmarks`) and adds `lm_eval/<task>/<metric>` to the metrics. The metrics go
to the configured loggers too (`logger=wandb`; none by default).
"""

from __future__ import annotations

from lmtrain.utils import gc_pause, import_env

# Before the libraries' imports read RANK and LOCAL_RANK as numbers (lmtrain.utils.import_env).
import_env.exit_on_unreadable_rank()

# The libraries import with the garbage collector paused (lmtrain.utils.gc_pause).
with gc_pause.paused_for_imports():
    import logging
    import sys
    from pathlib import Path
    from typing import Any

    import hydra
    import lightning as L
    from omegaconf import DictConfig, OmegaConf, open_dict
    from transformers import PreTrainedTokenizerBase

    from lmtrain.benchmarks import (
        benchmark_settings,
        check_task_text,
        load_tasks,
        run_tasks,
        tasks_context,
    )
    from lmtrain.data import token_cache
    from lmtrain.data.coverage import UnencodableTextError
    from lmtrain.data.datamodule import TextDataModule
    from lmtrain.data.pretrained_tokenizer import save_tokenizer
    from lmtrain.data.stored_source import this_machine_source
    from lmtrain.errors import LMTrainError, MissingCorpusError
    from lmtrain.models import CausalLMModule
    from lmtrain.models.checkpoint import LoadedModel, load_model, resolve_model_path
    from lmtrain.models.eval_split import bits_per_byte, warn_past_trained_windows
    from lmtrain.models.hf import check_context
    from lmtrain.models.model_eos import refuse_without_eos
    from lmtrain.models.tokenizer_digest import same_encoding
    from lmtrain.utils.checks import Problems
    from lmtrain.utils.composed_config import run_folder
    from lmtrain.utils.config_checks import check_data, check_eval_config, plain
    from lmtrain.utils.foreign_run_folder import refuse_foreign_output_dir
    from lmtrain.utils.group_overrides import refuse_null_groups
    from lmtrain.utils.instantiate import instantiate_loggers, instantiate_trainer
    from lmtrain.utils.interrupt_exit import interrupt_is_one_line
    from lmtrain.utils.io import write_json
    from lmtrain.utils.metric_text import short
    from lmtrain.utils.outside_records import refuse_replacing_outside_records
    from lmtrain.utils.run_folder import folder_key
    from lmtrain.utils.stored_targets import check_stored_data
    from lmtrain.utils.task import plain_metrics, task_wrapper

log = logging.getLogger(__name__)


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Validate the model on the data's whole val split; return and save its metrics."""
    output_dir = run_folder(cfg)  # first: a composed config without it, or null, in one line
    # `+data.block_size=16` alone: settings for the model's own data config, checked with it.
    typed = typed_data_settings(cfg)
    check_eval_config(cfg if typed is None else without_data(cfg))
    benchmarks = benchmark_settings(cfg)
    # Hydra's callback refused it on the command line; from Python (compose()) this is the check.
    refuse_foreign_output_dir(output_dir, str(cfg.task_name), folder_key(output_dir))
    refuse_replacing_outside_records(cfg, output_dir, resuming=False, overwrite=None)
    ckpt_path = resolve_model_path(cfg.ckpt_path, output_dir)
    # Unknown names, a missing lm-eval, or task data that cannot be downloaded stop us here,
    # before the model is loaded and the val split read.
    tasks = load_tasks(benchmarks) if benchmarks else []
    loggers = instantiate_loggers(cfg.get("logger"), run_cfg=cfg)
    L.seed_everything(cfg.seed, workers=True)
    loaded = load_model(ckpt_path)
    refuse_without_eos(loaded.tokenizer, ckpt_path)  # its val split is read with this tokenizer
    # lm-eval's context; a max_length the model cannot take is refused before the val split.
    config, run_config = loaded.model.config, loaded.run_config
    context = tasks_context(benchmarks, config, run_config) if benchmarks else None
    if benchmarks:  # a character the model's tokenizer lacks: refused before the val split too
        check_task_text(benchmarks, loaded.tokenizer)

    own_data = cfg.get("data") is None or typed is not None
    try:
        datamodule = eval_datamodule(cfg.get("data"), typed, loaded, ckpt_path, cfg.paths)
        datamodule.prepare_data()
    except MissingCorpusError as err:  # the training's corpus, moved or on another machine
        if not own_data or (typed is not None and "path" in (typed.get("source") or {})):
            raise
        raise LMTrainError(
            f"data.source.path={err.path!r}, the corpus ckpt_path={ckpt_path!r} was trained on, "
            "matches no file here: pass where it is now with +data.source.path=<path>, or "
            "evaluate on another corpus with data=<name>"
        ) from None
    except UnencodableTextError as err:  # text the model's tokenizer has no token for
        # Its own corpus can only hold such text if it changed after training (a char
        # tokenizer knows the characters of the text it was built from, no others).
        changed, fix = "", "text the model's tokenizer covers"
        if own_data:
            changed, fix = "changed since the model was trained and now ", "its training text"
        raise LMTrainError(
            f"data.source ({datamodule.source.describe()}) {changed}{err.problem()}: evaluate on "
            f"{fix}, or use a model trained with a byte-level BPE tokenizer "
            "(data.tokenizer.kind=bpe), which encodes any text"
        ) from None
    key = "+data.block_size" if own_data else "data.block_size"  # as the user types it
    warn_past_trained_windows(datamodule.block_size, loaded.run_config, key)

    # val/loss is the module's MeanMetric of the per-window mean cross entropy, weighted by
    # windows of equal length: the mean over every val token, so exp(val/loss) is exactly what
    # torchmetrics' Perplexity computes, without keeping batch x block x vocab logits around.
    module = CausalLMModule(model=loaded.model, tokenizer=loaded.tokenizer)
    trainer: L.Trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    trainer.limit_val_batches = 1.0
    metrics = plain_metrics(trainer.validate(module, datamodule=datamodule, verbose=False)[0])
    if benchmarks:
        device = trainer.strategy.root_device  # trainer.accelerator's choice: a GPU if asked for
        model, tokenizer = loaded.model, loaded.tokenizer
        metrics.update(run_tasks(tasks, benchmarks, model, tokenizer, device, context, cfg.seed))
    # A rank that failed after validate's last collective left rank 0 to exit 0: it waits here
    # for every rank, and one that stopped breaks the barrier (an error on rank 0 too).
    trainer.strategy.barrier("eval metrics")
    if not trainer.is_global_zero:  # the same figures: rank 0 writes and prints them once
        return metrics
    windows = datamodule.val_dataset  # the whole split, not a rank's share: decoded once
    assert windows is not None  # set up by trainer.validate
    metrics.update(bits_per_byte(metrics["val/loss"], windows, loaded.tokenizer))
    write_json(output_dir / "metrics.json", {**metrics, "ckpt_path": ckpt_path})
    names = benchmarks.tasks if benchmarks else []
    for logger in loggers:
        logger.log_hyperparams({"ckpt_path": ckpt_path, "tasks": names})
        logger.log_metrics(metrics)
        logger.finalize("success")
    log.info("%s: %s", ckpt_path, {k: short(v) for k, v in metrics.items()})
    return metrics


def typed_data_settings(cfg: DictConfig) -> DictConfig | None:
    """The `+data.<key>=<value>` settings typed without `data=<name>` (no `_target_`), or None.

    Eval selects no data config by default, so Hydra asks for the `+`; such keys change the
    model's own data config (`own_data_config`) instead of standing for a whole one.
    """
    data = cfg.get("data")
    return data if data is not None and "_target_" not in data else None


def without_data(cfg: DictConfig) -> DictConfig:
    """`cfg` without its partial `data` node, for the checks that expect a whole data config."""
    copy = cfg.copy()
    with open_dict(copy):
        copy.data = None
    return copy


def eval_datamodule(
    data_cfg: DictConfig | None,
    typed: DictConfig | None,
    loaded: LoadedModel,
    ckpt_path: str,
    paths: DictConfig,
) -> TextDataModule:
    """The val data, read with the model's tokenizer: `data=<name>` (`data_cfg`), or the config
    the model was trained with, changed by the `typed` settings.

    The training run's token cache is reused when the model's tokenizer made it. When it did not
    (the corpus changed since training, so its fingerprint is new and the run's settings would
    build a new tokenizer from today's text, or the cache was removed), the corpus is read with
    the model's tokenizer instead: ids from another tokenizer would give a wrong loss and bpb.
    """
    output_dir = Path(paths.output_dir)
    if data_cfg is not None and typed is None:  # another corpus
        check_context(loaded.model.config, data_cfg.block_size, eval_key="data.block_size")
        return hydra.utils.instantiate(with_model_tokenizer(data_cfg, loaded, output_dir))
    data_cfg = own_data_config(loaded, ckpt_path, typed, paths)
    check_context(loaded.model.config, data_cfg.block_size, eval_key="+data.block_size")
    trained = loaded.run_config["data"]  # the training's folders: left out of the corpus too
    datamodule = left_out(hydra.utils.instantiate(data_cfg), trained)
    # The training's own cache, where the run config says: used when it is complete and made
    # with the model's tokenizer (read only: a sound cache is never written), else built here.
    stored_cache = trained.get("cache_dir")
    if stored_cache and Path(stored_cache) != datamodule.cache_dir:
        at_training = OmegaConf.merge(data_cfg, {"cache_dir": str(stored_cache)})
        candidate = left_out(hydra.utils.instantiate(at_training), trained)
        if cache_made_with(candidate, loaded.tokenizer):
            return candidate
    if cache_made_with(datamodule, loaded.tokenizer):
        return datamodule
    why = (
        "the corpus changed since training, or its cache was removed"
        if typed is None
        else "a data setting typed here made another split, the corpus changed since training, "
        "or its cache was removed"
    )
    log.warning(
        "No token cache of %s was made with the model's tokenizer (%s): tokenizing it with the "
        "model's tokenizer",
        datamodule.source.describe(),
        why,
    )
    fresh = hydra.utils.instantiate(with_model_tokenizer(data_cfg, loaded, output_dir))
    return left_out(fresh, trained)


def left_out(datamodule: TextDataModule, trained: Any) -> TextDataModule:
    """`datamodule`, whose corpus also leaves out the training's cache and log folders (a
    corpus folder that held them at training holds them still)."""
    folders = {"the training's data.cache_dir": trained.get("cache_dir")}
    folders["the training's paths.log_dir"] = trained.get("log_dir")
    datamodule.source.leave_out({key: path for key, path in folders.items() if path})
    datamodule.source.typed_as = "+data.source"  # the model's own data config, changed with +
    return datamodule


def own_data_config(
    loaded: LoadedModel, ckpt_path: str, typed: DictConfig | None, paths: DictConfig
) -> DictConfig:
    """The data config the model was trained with, with the `typed` settings on top (checked:
    only keys it has, none of the tokenizer's, values as training would take them).

    It comes with the model, so it is data: its targets must be ones the project's configs name
    (or typed here), and a token cache is built and a corpus downloaded where this command's
    `paths` say, never in the training machine's folders it names (`data.cache_dir`,
    `data.log_dir`, a source's download or cache folder) nor from the URLs it names."""
    if "data" not in loaded.run_config:
        raise LMTrainError(f"ckpt_path={ckpt_path!r} holds no data config: pass data=<name>")
    typed_data = [plain(typed)] if typed is not None else []
    check_stored_data(loaded.run_config, f"ckpt_path={ckpt_path!r}: its run config", typed_data)
    data_cfg = OmegaConf.create(loaded.run_config["data"])
    with open_dict(data_cfg):
        data_cfg.cache_dir = str(Path(paths.data_dir) / "cache")  # as configs/data/_base.yaml
        data_cfg.log_dir = str(paths.log_dir)
        if isinstance(data_cfg.get("source"), DictConfig):
            data_cfg.source = this_machine_source(plain(data_cfg.source), Path(paths.data_dir))
    source = data_cfg.get("source") or {}
    log.info(
        "Reading the data config ckpt_path=%s was trained with: %s (data.source.path=%s)",
        ckpt_path,
        source.get("_target_"),
        source.get("path"),
    )
    if typed is None:
        return data_cfg
    missing, own_keys = object(), ", ".join(sorted(k for k in data_cfg if k != "_target_"))
    for key in dotted_keys(plain(typed)):
        setting = f"data.{key}={OmegaConf.select(typed, key)!r}"
        if key.split(".")[0] == "tokenizer":
            raise LMTrainError(
                f"{setting} cannot apply: eval reads text with the model's own tokenizer; drop it"
            )
        if OmegaConf.select(data_cfg, key, default=missing) is missing:
            raise LMTrainError(
                f"{setting} is not a setting of the data config ckpt_path={ckpt_path!r} was "
                f"trained with (it has {own_keys}): change one of those with +data.<key>=<value>, "
                "or evaluate on another corpus with data=<name>"
            )
    data_cfg = OmegaConf.merge(data_cfg, typed)
    problems = Problems()
    check_data(plain(data_cfg), problems, tokenizer=False)
    problems.raise_if_any()
    return data_cfg


def dotted_keys(node: dict[str, Any], prefix: str = "") -> list[str]:
    """`{"source": {"val_fraction": 0.2}}` as `["source.val_fraction"]`: the leaves typed."""
    keys = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            keys.extend(dotted_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def with_model_tokenizer(data_cfg: DictConfig, loaded: LoadedModel, output_dir: Path) -> DictConfig:
    """`data_cfg` reading its corpus with the model's tokenizer, saved in this run's folder (the
    cache is keyed by its files, not their folder: the next eval of the model reuses it)."""
    tokenizer_dir = output_dir / "tokenizer"
    save_tokenizer(loaded.tokenizer, tokenizer_dir)  # loads again, as the cache's copy does
    data_cfg.tokenizer = {"kind": "pretrained", "name": str(tokenizer_dir), "vocab_size": None}
    return data_cfg


def cache_made_with(datamodule: TextDataModule, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the token cache that `datamodule`'s settings name exists, is sound and was made
    with `tokenizer` (same vocabulary, merges, pre-tokenizer and end-of-text id)."""
    key = token_cache.fingerprint(datamodule.source, datamodule.tokenizer_settings)
    folder = datamodule.cache_dir / key
    if not folder.is_dir() or token_cache.find_problem(folder) is not None:
        return False
    cached = token_cache.load_tokenizer(folder)
    if any(getattr(t, "backend_tokenizer", None) is None for t in (cached, tokenizer)):
        return False  # not fast tokenizers: nothing to compare, so read anew
    return same_encoding(cached, tokenizer) and cached.eos_token_id == tokenizer.eos_token_id


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    with gc_pause.without_final_gc(), interrupt_is_one_line():
        refuse_null_groups(sys.argv[1:])  # `logger=null` was a traceback inside Hydra
        main()
