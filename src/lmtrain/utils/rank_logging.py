"""What a training process of global rank > 0 logs: errors, on the console only.

Every rank composes the same config and runs the same checks on it (the ranks are held to one
config by `lmtrain.callbacks.same_settings`), so each of rank 0's lines ("Instantiating ...",
"Preparing data", "Building model", a warning about the warm-up) came once more per rank under
`trainer=ddp_cpu`, torchrun or srun. Lightning prints its own lines on rank 0 only
(`rank_zero_info`, `rank_zero_warn`); lmtrain's follow it. Errors still print on every rank (a
rank may fail alone), and the run folder's log file is rank 0's, like every file there.
"""

from __future__ import annotations

import logging


def log_errors_only() -> None:
    """Drop the root logger's file handlers and hold it and its console handlers to ERROR and
    above (Hydra's `job_logging` made them for this job; a sweep's next job makes new ones;
    with `hydra/job_logging=disabled` Python's last-resort handler prints what reaches it)."""
    root = logging.getLogger()
    root.setLevel(logging.ERROR)
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        else:
            handler.setLevel(logging.ERROR)
