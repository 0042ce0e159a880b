"""Lightning's private checkpoint layout, read from the saves of its SLURM auto-requeue
(`hpc_ckpt_*.ckpt`); tests/test_hpc_requeue24.py tests each use. Part of
lmtrain.lightning_compat, whose rules it follows: each function says what it buys and whether
a public alternative exists.

Lightning writes `hpc_ckpt_<n>.ckpt` from inside its SIGUSR1 handler, so at whatever point of
the loop the signal lands: in a training step (the forward pass, the backward pass, the
optimizer's loop over the parameters), in a callback hook, in lmtrain's own save. Its restart
counts the batch progress it finds there as if the save had been written at a batch's edge.
"""

from __future__ import annotations

from typing import Any


def saved_inside_training_batch(checkpoint: dict[str, Any]) -> bool:
    """Whether `checkpoint` was written while a training batch was under way: counted ready
    (fetched) but not yet completed (every `on_train_batch_end` hook returned).

    Buys: `utils.requeue.resume_after_requeue` ranks such an `hpc_ckpt` below every save of
    lmtrain's own. Lightning's restart from it is not the uninterrupted run: it keeps the
    batch it finds started in its running count of batches (`batch_progress.total`), which
    `val_check_interval` is counted against, so every later validation ran one batch early
    (red team fault24). Mending the counters is not enough: the weights, the optimizer's
    moments and the callbacks' states may be those of a step half done (a signal between two
    parameters' updates, or inside a hook), and nothing in the file tells which. Public
    alternative: none (the counters are the loop's private state, `loops.fit_loop`).
    A checkpoint without that layout (not Lightning's) counts as not inside a batch.
    """
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
        counts = [int(progress[key]) for key in ("ready", "started", "processed", "completed")]
    except (KeyError, TypeError, ValueError):
        return False
    return counts[0] != counts[3]
