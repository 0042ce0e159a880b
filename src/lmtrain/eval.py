"""Evaluate a checkpoint: `python -m lmtrain.eval ckpt_path=<file> [data=<other corpus>]`.

Computes val/loss and val/ppl over the whole val split and writes them to the run folder's
`metrics.json`. The model and tokenizer come from the checkpoint alone; the data config is the
one it was trained with unless `data=...` names another.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.utils.checkpoint import model_from_checkpoint, resolve_ckpt_path
from lmtrain.utils.run import plain_metrics, task_wrapper, write_json_atomic

log = logging.getLogger(__name__)


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir)
    L.seed_everything(cfg.seed, workers=True)
    hf_model, tokenizer, run_config = model_from_checkpoint(ckpt_path)

    data_cfg = cfg.get("data")
    if data_cfg is None:
        if "data" not in run_config:
            raise LMTrainError(f"ckpt_path={ckpt_path!r} holds no data config: pass data=<name>")
        data_cfg = OmegaConf.create(run_config["data"])
    else:
        # Another corpus, read with the checkpoint's own tokenizer.
        tokenizer_dir = output_dir / "tokenizer"
        tokenizer.save_pretrained(tokenizer_dir)
        data_cfg.tokenizer = {"kind": "pretrained", "name": str(tokenizer_dir), "vocab_size": None}
    datamodule = hydra.utils.instantiate(data_cfg)
    datamodule.prepare_data()

    module = CausalLMModule(model=hf_model, tokenizer=tokenizer)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.limit_val_batches = 1.0
    metrics = plain_metrics(trainer.validate(module, datamodule=datamodule, verbose=False)[0])
    write_json_atomic(output_dir / "metrics.json", {**metrics, "ckpt_path": ckpt_path})
    log.info("%s: %s", ckpt_path, {k: round(v, 4) for k, v in metrics.items()})
    return metrics


@hydra.main(version_base="1.3", config_path="../../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
