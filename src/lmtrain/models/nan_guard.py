"""What a NaN or infinite training loss does (`model.nan_guard`): stop, skip, or nothing.

All ranks decide together (one all-reduce of a flag), so they all skip, or all stop, at the same
step: a rank that skipped backward alone would leave the others waiting in DDP's gradient
all-reduce. The flag is read on the host, a sync per micro-batch that stalls the GPU's queue;
`nan_guard=off` removes it.

`stop` ends the run with one line naming the step and keeps the checkpoints as they are: it saves
nothing. The weights before step N are the ones whose forward gave step N's NaN, and a resume
replays that forward on the same batch, which the learning rate does not enter: a save of them
sent the user to lower the learning rate and resume, to stop at step N again every time. So the
line sends them back to the last checkpoint the run saved (`checkpoints/last.ckpt`, named with its
step), to go on from it with a lower learning rate or in `skip` mode. Weights that are themselves
NaN or inf stop the run in either mode, and no checkpoint of them is saved (`refuse_spoilt_save`),
so the last one written is a good one.

`skip` drops the micro-batch; a run that diverged for good meets a NaN at every later step, and
would skip them all and end as a success. So `model.nan_guard_max_skips` optimizer steps in a row
whose every micro-batch was skipped (`SkipCount`) stop it as `stop` does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lmtrain.errors import LMTrainError, NonFiniteLossError
from lmtrain.lightning_compat import accumulating
from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.models.distributed import shards_models
from lmtrain.utils.resume_hints import resume_hint
from lmtrain.utils.safe_load import saved_step

NAN_GUARD_MODES = ("stop", "skip", "off")
log = logging.getLogger(__name__)


def check_nan_guard(mode: str | bool, max_skips: int) -> str:
    """`mode`, if it is one of NAN_GUARD_MODES, with `max_skips` a whole number >= 1; one line
    naming the bad value otherwise. YAML 1.1 (OmegaConf's, in a config file) reads an unquoted
    `off` (or `no`, `false`) as False: that is "off", as written. True (`on`, `yes`) names no
    mode and stays refused."""
    if mode is False:
        mode = "off"
    if mode not in NAN_GUARD_MODES:
        read = " (YAML reads on, yes and true so)" if mode is True else ""
        raise LMTrainError(f"model.nan_guard={mode!r}{read}: use one of {NAN_GUARD_MODES}")
    if isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 1:
        raise LMTrainError(
            f"model.nan_guard_max_skips={max_skips!r}: pass a whole number >= 1 (the optimizer "
            "steps in a row that nan_guard=skip may skip whole before it stops the run)"
        )
    return mode


def skip_nonfinite(module: Any, loss: torch.Tensor) -> bool:
    """Whether to skip this micro-batch of `module` (a CausalLMModule): its loss, or another
    rank's, is NaN or infinite. Under `stop` (and `skip`'s limit, `SkipCount`), raises."""
    skip = nonfinite_to_skip(module, loss)
    if module.nan_guard == "skip":
        module.skip_count.count(module, skip)
    return skip


def nonfinite_to_skip(module: Any, loss: torch.Tensor) -> bool:
    """Whether this micro-batch's loss, or another rank's, is NaN or infinite, under `skip`;
    the stop under `stop`, or for weights that are NaN or inf."""
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
    if step == 1:  # step 0's weights would only repeat it: no resume can help
        raise before_any_update(module, value, "nothing was saved")
    raise diverged(
        module,
        f"non-finite loss ({value}) at step {step}: the weights of step {step - 1} give it at "
        "any learning rate, and are not saved",
    )


class SkipCount:
    """`nan_guard=skip`'s count of the optimizer step in progress (its micro-batches skipped and
    trained on) and of the steps before it skipped whole, in a row (`in_row`): at `limit` of
    them the loss has diverged for good, and the run stops as `stop` does. Checkpointed
    (`state_dict`): a resumed run stops at the step the uninterrupted one would."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.step: int | None = None  # the global_step of the step in progress
        self.skipped = self.trained = 0  # its micro-batches so far
        self.in_row = 0

    def count(self, module: Any, skipped: bool) -> None:
        """Count this micro-batch of `module`; at the one that steps (Lightning's rule, also at
        an epoch's last batch: `accumulating`), the stop if it ends the limit-th step in a row
        that trained on none. Every rank counts alike (the ranks skip together)."""
        if module.global_step != self.step:
            self.step, self.skipped, self.trained = module.global_step, 0, 0
        self.skipped, self.trained = self.skipped + skipped, self.trained + (not skipped)
        if accumulating(module.trainer):
            return
        self.in_row = self.in_row + 1 if self.whole_step else 0
        if self.in_row >= self.limit:
            raise diverged(
                module,
                f"model.nan_guard=skip skipped every micro-batch of {self.in_row} optimizer "
                f"steps in a row, up to step {module.global_step + 1} (model.nan_guard_max_skips"
                f"={self.limit}): the loss diverged",
                skip=False,
            )

    def state_dict(self) -> dict[str, int]:
        """The steps skipped whole in a row; the counts of the step in progress are not kept
        (saves come between steps: restored, they would mark the next step skipped)."""
        return {"in_row": self.in_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Older checkpoints hold none: counted from 0, as they were."""
        self.in_row = int(state.get("in_row") or 0)

    @property
    def whole_step(self) -> bool:
        """Whether every micro-batch of the step in progress so far was skipped: it has no
        gradients (under DDP, zeros that `on_before_optimizer_step` drops)."""
        return self.skipped > 0 and not self.trained


def diverged(module: Any, what: str, skip: bool = True) -> NonFiniteLossError:
    """The stop for a non-finite loss from finite weights: the checkpoints are kept (see the
    module's docstring), and the line sends the user to the last one with a lower learning
    rate, or (`skip`: when this is not skip mode already) in skip mode."""
    trainer = module.trainer
    # trainer=fsdp refuses `skip` (lmtrain.models.distributed.shard): not offered there.
    offer = skip and not shards_models(trainer.strategy)
    other = ", or skip such batches with model.nan_guard=skip" if offer else ""
    kept, then = kept_checkpoint(module)
    return NonFiniteLossError(
        f"{what}; {kept}; lower model.optimizer.lr{clip_hint(trainer)}{other}, then {then}"
    )


def kept_checkpoint(module: Any) -> tuple[str, str]:
    """(the checkpoint a stop keeps: last.ckpt, named with its step, or none saved yet, how to
    go on from it), for the stops that save nothing."""
    path = last_checkpoint_path(module.trainer)
    if not path.exists():
        return "no checkpoint was saved yet", "start again (in this run folder: overwrite_run=true)"
    step = saved_step(path)
    of_step = "" if step is None else f" (step {step})"
    return f"kept {path} as it was{of_step}", resume_hint(path, module.trainer.default_root_dir)


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
    kept, then = kept_checkpoint(module)
    return NonFiniteLossError(
        f"{what} NaN or inf (an update overflowed while its loss was finite): {kept}; lower "
        f"model.optimizer.lr{clip_hint(module.trainer)}, then " + then
    )


def clip_hint(trainer: Any) -> str:
    """Clipping as advice only where the run does not clip already (the default clips at 1.0)."""
    clips = getattr(trainer, "gradient_clip_val", None)
    return "" if clips else " (or set trainer.gradient_clip_val)"
