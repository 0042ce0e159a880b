"""Whether a run folder's run ran without a checkpoint callback, by its recorded config.

`callbacks=none`, or `callbacks.model_checkpoint=null`, trains to the end and saves nothing (no
last.ckpt, no best checkpoint; instantiate_trainer turns Lightning's own off too). A later
`ckpt_path=last` or `resume=` on such a run was told it "stopped before its first save": it had
finished, and no rerun would ever leave anything to resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import OmegaConf

from lmtrain.utils.metric_names import own_callbacks

# Class names of the callbacks that write checkpoints/ (lmtrain's and Lightning's).
CHECKPOINT_CLASSES = ("StepScheduledCheckpoint", "ModelCheckpoint")

RAN_WITHOUT = (
    "ran without a checkpoint callback (callbacks=none, or callbacks.model_checkpoint=null), "
    "so it saved no checkpoint and cannot be resumed or extended"
)


def ran_without_checkpoints(run_dir: str | Path) -> bool:
    """Whether the config recorded in `run_dir` (`.hydra/config.yaml`) names no callback that
    writes checkpoints: none of lmtrain's or Lightning's checkpoint classes, no callback of the
    user's own (which may subclass one), and not `trainer.enable_checkpointing=true`. The
    record is data: read as text, nothing in it imported. False when it cannot be read."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml"))
    except Exception:  # missing, unreadable, not YAML
        return False
    if not isinstance(saved, Mapping):
        return False
    trainer, callbacks = saved.get("trainer"), saved.get("callbacks") or {}
    if isinstance(trainer, Mapping) and trainer.get("enable_checkpointing") is True:
        return False  # Lightning's own ModelCheckpoint, which saves into a logger's folder
    if not isinstance(callbacks, Mapping):
        return False
    if own_callbacks(callbacks):
        return False
    return not any(
        str(node.get("_target_", "")).rsplit(".", 1)[-1] in CHECKPOINT_CLASSES
        for node in callbacks.values()
        if isinstance(node, Mapping)
    )
