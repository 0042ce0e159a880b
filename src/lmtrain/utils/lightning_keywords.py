"""Lightning's own names for a checkpoint its trainer knows (`trainer.fit(ckpt_path="best")`).

A new lmtrain process has no such trainer, and would read them as missing files. Refused here,
in utils, so that the Hydra callback that claims the run folder
(`lmtrain.utils.run_folder.ClaimRunFolder`) can refuse them first: its folder check called a
finished run's own folder "another run" and offered overwrite_run=true, which replaces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtrain.errors import LMTrainError

LIGHTNING_KEYWORDS = ("best", "hpc", "registry")


def refuse_lightning_keyword(ckpt_path: Any, output_dir: str | Path) -> None:
    """Raise LMTrainError for `ckpt_path=best` (or another of `LIGHTNING_KEYWORDS`), naming what
    lmtrain takes instead: the run folder's newest best checkpoint where it holds one. A file
    of that name in the working directory is a path, and passes."""
    if ckpt_path not in LIGHTNING_KEYWORDS or Path(ckpt_path).exists():
        return
    folder = Path(output_dir)
    best = [p for p in (folder / "checkpoints").glob("best*.ckpt") if not p.name.startswith(".")]
    newest = max(best, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)
    instead = (
        f"\"ckpt_path='{newest}'\" (this run's newest best checkpoint; quoted: its name holds =)"
        if newest is not None
        else "\"ckpt_path='<run folder>/checkpoints/best-step=<step>-....ckpt'\" (quoted)"
    )
    raise LMTrainError(
        f"ckpt_path={ckpt_path} is Lightning's name for a checkpoint of a trainer in the same "
        f"process, which lmtrain does not take: pass {instead}, ckpt_path=last "
        "hydra.run.dir=<run folder> to resume a run, or ckpt_path=<file.ckpt>"
    )
