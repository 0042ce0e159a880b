"""What `CausalLMModule` adds to each checkpoint (under `CHECKPOINT_KEY`): what turns the weights
back into an HF model and describes them (model card), and the run's counters for a resume,
which `restore_counters` reads back."""

from __future__ import annotations

from typing import Any

from lmtrain.models import lora
from lmtrain.models.checkpoint import CHECKPOINT_KEY
from lmtrain.utils.redact import redact


def add_extras(module: Any, checkpoint: dict[str, Any]) -> None:
    """`val_loss` is the latest validation's, which may have used limit_val_batches."""
    trainer = module._trainer
    val_loss = trainer.callback_metrics.get("val/loss") if trainer else None
    checkpoint[CHECKPOINT_KEY] = {
        "hf_config": module.model.config.to_dict(),
        "tokenizer_files": module.tokenizer_files,
        "run_config": module.run_config,
        "tokens_seen": module.tokens_seen,
        "tokens_seen_steps": module.tokens_steps,
        "nonfinite_skips": module.nonfinite_skips,
        "nan_guard_skips": module.skip_count.state_dict(),  # the steps skipped whole in a row
        "clipped_steps": module.step_stats.state_dict(),
        "step_loss": module.step_loss.state_dict(trainer),  # between micro-batches
        "val_loss": None if val_loss is None else float(val_loss),
    }
    lora.adapters_only(module, checkpoint)  # LoRA: the adapters and a reference to the base
    # save_hyperparameters() keeps the constructor's model.* values: no secrets in files.
    checkpoint["hyper_parameters"] = redact(dict(checkpoint.get("hyper_parameters", {})))


def restore_counters(module: Any, checkpoint: dict[str, Any]) -> None:
    """A resumed run goes on counting tokens, skipped micro-batches and clipped steps from the
    checkpoint's counts."""
    extra = checkpoint.get(CHECKPOINT_KEY, {})
    module.nonfinite_skips = int(extra.get("nonfinite_skips", 0))
    module.step_stats.load_state_dict(extra.get("clipped_steps", {}))
    module.skip_count.load_state_dict(extra.get("nan_guard_skips", {}))
    module.step_loss.load_state_dict(extra.get("step_loss", {}))
    if "tokens_seen_steps" in extra:  # older checkpoints: derived from this run's settings
        module.tokens_before = (float(extra["tokens_seen"]), int(extra["tokens_seen_steps"]))
        module.tokens_seen, module.tokens_steps = module.tokens_before  # saved again before a step
