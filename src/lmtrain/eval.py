"""Evaluate a model: `python -m lmtrain.eval ckpt_path=<.ckpt or exported folder> [data=<corpus>]`.

Reports over the whole val split: val/loss (nats per token), val/ppl and val/bpb (bits per UTF-8
byte), and writes them to the run folder's `metrics.json`. Loss and perplexity depend on the
tokenizer; bits per byte does not, so it compares models with different tokenizers fairly.
The model and tokenizer come from the checkpoint or folder alone; the data config is the one it
was trained with unless `data=...` names another, which is then read with the model's tokenizer.

`tasks=[hellaswag,arc_easy]` also runs EleutherAI's lm-evaluation-harness on the same model in
memory (`lmtrain.benchmarks`) and adds `lm_eval/<task>/<metric>` to the metrics. The metrics go
to the configured loggers too (`logger=wandb`; none by default).
"""

from __future__ import annotations

# Before the libraries below: they import with the garbage collector paused.
from lmtrain.utils import gc_pause

# isort: split

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from lmtrain.benchmarks import benchmark_settings, load_tasks, run_tasks, tasks_context
from lmtrain.data.coverage import UnencodableTextError
from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.checkpoint import load_model, resolve_model_path
from lmtrain.models.hf import check_context
from lmtrain.utils.config_checks import check_eval_config
from lmtrain.utils.instantiate import instantiate_loggers, instantiate_trainer
from lmtrain.utils.io import write_json
from lmtrain.utils.task import plain_metrics, task_wrapper

gc_pause.resume()

log = logging.getLogger(__name__)


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Validate the model on the data's whole val split; return and save its metrics."""
    check_eval_config(cfg)
    benchmarks = benchmark_settings(cfg)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_model_path(cfg.ckpt_path, output_dir)
    # Unknown names, a missing lm-eval, or task data that cannot be downloaded stop us here,
    # before the model is loaded and the val split read.
    tasks = load_tasks(benchmarks) if benchmarks else []
    loggers = instantiate_loggers(cfg.get("logger"), run_cfg=cfg)
    L.seed_everything(cfg.seed, workers=True)
    loaded = load_model(ckpt_path)
    # lm-eval's context; a max_length the model cannot take is refused before the val split.
    config, run_config = loaded.model.config, loaded.run_config
    context = tasks_context(benchmarks, config, run_config) if benchmarks else None

    data_cfg = cfg.get("data")
    if data_cfg is None:
        if "data" not in loaded.run_config:
            raise LMTrainError(f"ckpt_path={ckpt_path!r} holds no data config: pass data=<name>")
        data_cfg = OmegaConf.create(loaded.run_config["data"])
    else:
        # Another corpus, read with the model's own tokenizer.
        tokenizer_dir = output_dir / "tokenizer"
        loaded.tokenizer.save_pretrained(tokenizer_dir)
        data_cfg.tokenizer = {"kind": "pretrained", "name": str(tokenizer_dir), "vocab_size": None}
    check_context(loaded.model.config, data_cfg.block_size)
    datamodule = hydra.utils.instantiate(data_cfg)
    try:
        datamodule.prepare_data()
    except UnencodableTextError as err:  # another corpus than the model's, read with its tokenizer
        raise LMTrainError(
            f"data.source ({datamodule.source.describe()}) {err.problem()}: evaluate on text the "
            "model's tokenizer covers, or a model trained with a byte-level BPE tokenizer "
            "(data.tokenizer.kind=bpe), which encodes any text"
        ) from None

    # val/loss is the module's MeanMetric of the per-window mean cross entropy, weighted by
    # windows of equal length: the mean over every val token, so exp(val/loss) is exactly what
    # torchmetrics' Perplexity computes, without keeping batch x block x vocab logits around.
    module = CausalLMModule(model=loaded.model, tokenizer=loaded.tokenizer)
    trainer: L.Trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    trainer.limit_val_batches = 1.0
    metrics = plain_metrics(trainer.validate(module, datamodule=datamodule, verbose=False)[0])
    val_batches = datamodule.val_dataloader()
    metrics.update(bits_per_byte(metrics["val/loss"], val_batches, loaded.tokenizer))
    if benchmarks:
        device = trainer.strategy.root_device  # trainer.accelerator's choice: a GPU if asked for
        model, tokenizer = loaded.model, loaded.tokenizer
        metrics.update(run_tasks(tasks, benchmarks, model, tokenizer, device, context, cfg.seed))
    write_json(output_dir / "metrics.json", {**metrics, "ckpt_path": ckpt_path})
    names = benchmarks.tasks if benchmarks else []
    for logger in loggers:
        logger.log_hyperparams({"ckpt_path": ckpt_path, "tasks": names})
        logger.log_metrics(metrics)
        logger.finalize("success")
    log.info("%s: %s", ckpt_path, {k: round(v, 4) for k, v in metrics.items()})
    return metrics


def bits_per_byte(
    loss: float, val_batches: Any, tokenizer: PreTrainedTokenizerBase
) -> dict[str, float]:
    """val/bpb = loss / ln 2 x tokens / bytes over the tokens the loss was measured on.

    The targets of every val window (`window[1:]`) are those tokens; decoded together they give
    the text the model predicted, and its UTF-8 length is the byte count. End-of-text tokens
    decode to nothing: they are counted as tokens (the model pays for them) but hold no bytes.
    """
    targets = torch.cat([batch[:, 1:].reshape(-1) for batch in val_batches])
    n_bytes = len(tokenizer.decode(targets.tolist(), skip_special_tokens=True).encode("utf-8"))
    if n_bytes == 0:
        raise LMTrainError("the val split decodes to no text: point data.source at some text")
    n_tokens = targets.numel()
    return {
        "val/bpb": loss / math.log(2) * n_tokens / n_bytes,
        "val/tokens": float(n_tokens),
        "val/bytes": float(n_bytes),
    }


@hydra.main(version_base="1.3", config_path="../../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    with gc_pause.without_final_gc():
        main()
