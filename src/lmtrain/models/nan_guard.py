"""What a NaN or infinite training loss does (`model.nan_guard`): stop, skip, or nothing.

All ranks decide together (one all-reduce of a flag), so they all skip, or all stop, at the same
step: a rank that skipped backward alone would leave the others waiting in DDP's gradient
all-reduce. The flag is read on the host, a sync per micro-batch that stalls the GPU's queue;
`nan_guard=off` removes it.

`stop` ends the run with one line naming the step, and saves nothing. The weights before step N
are the ones whose forward gave step N's NaN, and a resume replays that forward on the same batch,
which the learning rate does not enter: a save of them sent the user to lower the learning rate
and resume, to stop at step N again every time. So the line sends them back to the newest
last.ckpt whose weights gave a finite loss (named with its step), to go on from it with a lower
learning rate or in `skip` mode: when the save just before the NaN holds the weights that give
it, the one before it takes its place again (`lmtrain.models.last_fallback`). Weights that are
themselves NaN or inf stop the run in either mode, and no checkpoint of them is saved
(`refuse_spoilt_save`), so the last one written is a good one.

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
from lmtrain.models.distributed import shards_models
from lmtrain.models.last_fallback import restore_good_last
from lmtrain.utils.resume_hints import resume_hint

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
        "any learning rate",
        bad_from=step - 1,
        unsaved=True,
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
                bad_from=module.global_step + 1 - self.in_row,  # the weights skipped since
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


def diverged(
    module: Any, what: str, skip: bool = True, bad_from: int | None = None, unsaved: bool = False
) -> NonFiniteLossError:
    """The stop for a non-finite loss from finite weights, those of step `bad_from` on: the
    line sends the user to the newest last.ckpt before them (see the module's docstring) with
    a lower learning rate, or (`skip`: when this is not skip mode already) in skip mode.
    `unsaved`: `what` names those weights, and says whether a checkpoint holds them."""
    trainer = module.trainer
    # trainer=fsdp refuses `skip` (lmtrain.models.distributed.shard): not offered there.
    offer = skip and not shards_models(trainer.strategy)
    other = ", or skip such batches with model.nan_guard=skip" if offer else ""
    kept, then, held = kept_checkpoint(module, bad_from)
    lower = f"lower model.optimizer.lr{clip_hint(trainer)}"
    if not held:
        unsaved_note = ", and are not saved" if unsaved else ""
        return NonFiniteLossError(f"{what}{unsaved_note}; {kept}; {lower}{other}, then {then}")
    # Resuming from them meets the same NaN at any learning rate: skip mode alone gets past
    # it, when one batch gave it (not offered where skip mode is off, or met it already).
    past = f", or, if one batch gives it, {then} model.nan_guard=skip" if offer else ""
    return NonFiniteLossError(
        f"{what}; {kept}, which holds those weights: {lower}, then start again (in this run "
        f"folder: overwrite_run=true){past}"
    )


def kept_checkpoint(module: Any, bad_from: int | None = None) -> tuple[str, str, bool]:
    """(the checkpoint a stop leaves: last.ckpt, named with its step, or none, how to go on
    from it, whether it holds the weights that give the NaN), for the stops that save nothing.
    A last.ckpt of step `bad_from` or later holds them: the one before it is put back where
    the run kept one (`restore_good_last`). Without `bad_from` (weights that are NaN, which no
    save holds) last.ckpt is kept."""
    bad = module.global_step + 1 if bad_from is None else bad_from
    path, step, done = restore_good_last(module.trainer, bad)
    if not path.exists():
        return (
            "no checkpoint was saved yet",
            "start again (in this run folder: overwrite_run=true)",
            False,
        )
    of_step = "" if step is None else f" (step {step})"
    hint = resume_hint(path, module.trainer.default_root_dir)
    if done == "restored":
        return f"put {path} back as it was{of_step}, before the save of those weights", hint, False
    return f"kept {path} as it was{of_step}", hint, done == "holds"


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
    kept, then, _ = kept_checkpoint(module)
    return NonFiniteLossError(
        f"{what} NaN or inf (an update overflowed while its loss was finite): {kept}; lower "
        f"model.optimizer.lr{clip_hint(module.trainer)}, then " + then
    )


def clip_hint(trainer: Any) -> str:
    """Clipping as advice only where the run does not clip already (the default clips at 1.0)."""
    clips = getattr(trainer, "gradient_clip_val", None)
    return "" if clips else " (or set trainer.gradient_clip_val)"


def proven_weights(module: Any, weights_step: int) -> int | None:
    """The step whose weights the micro-batch that just ended trained on with a finite loss:
    `weights_step` under `stop` (a NaN would have stopped it), the step in progress under
    `skip` once a micro-batch of it was not skipped; None otherwise (`off` checks nothing)."""
    mode = getattr(module, "nan_guard", "off")
    if mode == "stop":
        return weights_step
    if mode == "skip" and module.skip_count.trained:
        return module.skip_count.step
    return None
