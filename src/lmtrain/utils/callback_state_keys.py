"""Two callbacks of the callbacks group that would save their state under one key, refused by
name as they are built, before any data is prepared.

A checkpoint holds each stateful callback's state under its `Callback.state_key` (Lightning's
public API): a ModelCheckpoint's key is its monitor, mode and save schedule, an EarlyStopping's
its monitor and mode, any other callback's its class. Lightning's Trainer refuses two stateful
callbacks of one key, since a resume could not tell whose state is whose; it did so with a
RuntimeError that Hydra printed as several lines (`Error executing job ... Found more than one
stateful callback of type ModelCheckpoint`), after the data and the model were built, naming
neither config entry: a second ModelCheckpoint on val/loss (`+callbacks.top3...`) beside
`callbacks.model_checkpoint`, or two EarlyStoppings on val/loss with different patience.
The keys are read from the built callbacks (a subclass may define its own, as
lmtrain's StepScheduledCheckpoint does), and only of those Lightning saves (`state_dict`
overridden), as its own check does.
"""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.model_helpers import is_overridden

from lmtrain.errors import LMTrainError


def refuse_shared_state_keys(callbacks: Mapping[str, Callback], group: str = "callbacks") -> None:
    """Raise LMTrainError naming the first two entries of `callbacks` (config name -> callback,
    in config order) whose states Lightning would save under one key."""
    seen: dict[str, str] = {}  # state_key -> the config entry that has it
    for name, callback in callbacks.items():
        if not is_overridden("state_dict", instance=callback, parent=Callback):
            continue  # nothing saved, so any number of them may share a key
        key = callback.state_key
        if key in seen:
            raise LMTrainError(clash_message(f"{group}.{seen[key]}", f"{group}.{name}", callback))
        seen[key] = name


def clash_message(first: str, second: str, callback: Callback) -> str:
    """Why `second` cannot run beside `first` (whose state key `callback`, second's, shares),
    and what would tell them apart for its kind of callback."""
    if isinstance(callback, ModelCheckpoint):
        differ = (
            f"give {second} another monitor or mode, or another every_n_train_steps, "
            f"every_n_epochs or train_time_interval, or drop one (~{second})"
        )
    elif isinstance(callback, EarlyStopping):
        differ = f"give {second} another monitor or mode, or drop one (~{second})"
    else:  # a key of the class's own making
        differ = f"drop one (~{second})"
    return (
        f"{second} would save its state in checkpoints under the same key as {first} "
        f"(state_key {callback.state_key}), and Lightning keeps one state per key: {differ}"
    )
