"""What a NaN or infinite training loss does (`model.nan_guard`): stop, skip, or nothing.

All ranks decide together (one all-reduce of a flag), so they all skip, or all stop, at the same
step: a rank that skipped backward alone would leave the others waiting in DDP's gradient
all-reduce. The flag is read on the host, a sync per micro-batch that stalls the GPU's queue;
`nan_guard=off` removes it. `stop` saves the weights before this step (the optimizer has not
stepped yet) as checkpoints/last.ckpt and ends the run with one line naming the step. Weights
that are themselves NaN or inf stop the run in either mode, and no checkpoint of them is saved
(`refuse_spoilt_save`), so the last one written is a good one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lmtrain.errors import LMTrainError, NonFiniteLossError
from lmtrain.lightning_compat import saving_as_of_the_last_finished_batch
from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.models.distributed import shards_models
from lmtrain.utils.resume_hints import resume_hint

NAN_GUARD_MODES = ("stop", "skip", "off")
log = logging.getLogger(__name__)


def check_nan_guard(mode: str) -> str:
    """`mode`, if it is one of NAN_GUARD_MODES; one line naming them otherwise."""
    if mode not in NAN_GUARD_MODES:
        raise LMTrainError(f"model.nan_guard={mode!r}: use one of {NAN_GUARD_MODES}")
    return mode


def skip_nonfinite(module: Any, loss: torch.Tensor) -> bool:
    """Whether to skip this micro-batch of `module` (a CausalLMModule): its loss, or another
    rank's, is NaN or infinite. Under `stop`, saves the weights and raises instead."""
    trainer = module.trainer
    bad = (~torch.isfinite(loss.detach())).float()
    if trainer.world_size > 1:
        bad = trainer.strategy.reduce(bad, reduce_op="sum")
    if not bad.item():
        return False
    step = module.global_step + 1
    value = "nan or inf on another rank" if torch.isfinite(loss) else f"{loss.item()}"
    if not weights_finite(module):
        if step == 1:  # no update yet: built (or loaded) so
            raise before_any_update(module, value, "its weights as built are NaN or inf")
        # An earlier update overflowed (a finite loss, an infinite gradient): skipping cannot
        # help, as every later loss is NaN too, and saving would replace the last good
        # checkpoint with the spoilt weights.
        raise spoilt(module, f"non-finite loss ({value}) at step {step} from weights already")
    if module.nan_guard == "skip":
        module.nonfinite_skips += 1
        if trainer.is_global_zero:
            log.warning(
                "Non-finite loss (%s) at step %d: micro-batch skipped (%d so far)",
                value,
                step,
                module.nonfinite_skips,
            )
        return True
    if step == 1:  # nothing saved: step 0's weights would only repeat it, and a checkpoint
        # in the run folder would have a new run there refused
        raise before_any_update(module, value, "nothing was saved")
    path = last_checkpoint_path(trainer)
    with saving_as_of_the_last_finished_batch(trainer):
        trainer.save_checkpoint(path, False)  # not weights only: a whole one, to resume from
    # trainer=fsdp refuses `skip` (lmtrain.models.distributed.shard): not offered there.
    sharded = shards_models(trainer.strategy)
    skip = "" if sharded else ", or skip such batches with model.nan_guard=skip"
    raise NonFiniteLossError(
        f"non-finite loss ({value}) at step {step}: saved the weights of step {step - 1} to "
        f"{path}; lower model.optimizer.lr{clip_hint(trainer)}{skip}, then "
        f"{resume_hint(path, trainer.default_root_dir)}"
    )


def before_any_update(module: Any, value: str, weights: str) -> NonFiniteLossError:
    """The stop at step 1: the loss of the model as built (or loaded) is already non-finite, so
    its config, its weights or a half precision make it, not the learning rate, and resuming
    from step 0 only repeats it; the message of later steps advised both."""
    causes = "model.config or model.pretrained's weights"
    precision, other = str(module.trainer.precision), ""
    if precision not in ("32-true", "64-true"):  # float16 overflows where float32 does not
        causes = f"model.config, model.pretrained's weights or trainer.precision={precision}"
        other = ", or pass trainer.precision=32-true"
    return NonFiniteLossError(
        f"non-finite loss ({value}) at step 1, before any update: the model as built gives it "
        f"({causes}), and no resume can help ({weights}): check model.config values such as "
        f"layer_norm_epsilon, rms_norm_eps, rope_theta or initializer_range{other}, then start "
        "a new run (in this run folder: overwrite_run=true)"
    )


def weights_finite(module: Any) -> bool:
    """Whether every weight of `module` is finite on every rank (each rank checks its own
    shards under FSDP). Run on the way to a stop and before each checkpoint save: one pass
    over the weights, small beside the save itself."""
    local = [getattr(p, "to_local", lambda p=p: p)() for p in module.parameters()]
    bad = torch.stack([~torch.isfinite(t).all() for t in local]).any().float()
    if module.trainer.world_size > 1:
        bad = module.trainer.strategy.reduce(bad, reduce_op="sum")
    return not bad.item()


def non_finite_weight(model: torch.nn.Module) -> str | None:
    """The name of the first weight of `model` holding NaN or inf (one process, whole tensors):
    what an export or a sample of a checkpoint from outside training meets first."""
    return next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)


def refuse_spoilt_save(module: Any) -> None:
    """Before any checkpoint of the run is written (`on_save_checkpoint`, every rank): refuse
    weights that are NaN or inf. An update that overflowed under a finite loss spoils them a
    step before the loss shows it; a periodic save in that step wrote them as last.ckpt, and the
    guard then sent the user to resume from it, to meet the same NaN again."""
    if not weights_finite(module):
        raise spoilt(module, f"the weights after step {module.global_step} are")


def spoilt(module: Any, what: str) -> NonFiniteLossError:
    """The stop for weights that are NaN or inf: the checkpoints saved before are kept."""
    path = last_checkpoint_path(module.trainer)
    kept = f"kept {path} as it was" if path.exists() else "no checkpoint was saved yet"
    then = "start the run again"
    if path.exists():
        then = resume_hint(path, module.trainer.default_root_dir)
    return NonFiniteLossError(
        f"{what} NaN or inf (an update overflowed while its loss was finite): {kept}; lower "
        f"model.optimizer.lr{clip_hint(module.trainer)}, then " + then
    )


def clip_hint(trainer: Any) -> str:
    """Clipping as advice only where the run does not clip already (the default clips at 1.0)."""
    clips = getattr(trainer, "gradient_clip_val", None)
    return "" if clips else " (or set trainer.gradient_clip_val)"
