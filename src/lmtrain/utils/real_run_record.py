"""Whether a run folder's `.hydra/config.yaml` records a real run or a debug one
(`trainer.fast_dev_run`): a debug run may not replace a real run's record
(`lmtrain.utils.run_folder.debug_run_problem`), but its own processes' records are no run's."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def records_real_run(config_file: Path) -> bool:
    """Whether `config_file` (a `.hydra/config.yaml`) is a run's that is no debug run. This
    debug run's own processes (torchrun, srun, another node) write a debug one, and so did a
    debug command refused after Hydra wrote it: those do not make the folder a run's."""
    try:
        saved = OmegaConf.load(config_file)
    except Exception:  # missing, unreadable, not YAML: no record to keep
        return False
    fast = OmegaConf.select(saved, "trainer.fast_dev_run", default=None)
    return isinstance(saved, DictConfig) and fast in (None, False, 0)
