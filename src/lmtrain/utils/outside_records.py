"""A new run does not replace records outside its run folder.

Two of a run's records are replaced, not added to, by a new run: the text samples
(`<callbacks.text_samples.dirpath>/samples.txt`, whose first block starts the file again) and
the CSV logger's `metrics.csv`. In the run folder, `lmtrain.utils.run_folder` refuses another
run's records. Pointed elsewhere (`callbacks.text_samples.dirpath=<another run>`,
`logger.csv.save_dir=<another run>`, a file of the user's), they replaced that run's samples and
metrics history with nothing but a warning (found by a red team). As for an outside checkpoint
folder (`lmtrain.utils.checkpoint_dirpaths`), a run that resumes, or `overwrite_run=true`, may.
`lmtrain.eval` has neither: its CSV logger pointed at a training run added an eval row to that
run's curve (and rewrote a user's metrics.csv), so it is refused there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmtrain.errors import LMTrainError

TEXT_SAMPLES = "lmtrain.callbacks.samples.TextSamples"


def replaced_records(cfg: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """(setting, file) of each record a new run of `cfg` starts afresh: the text samples' file
    and each CSV logger's metrics.csv (a logger with `version: null` writes a new version_N
    folder, and replaces nothing)."""
    found = []
    for name, entry in (cfg.get("callbacks") or {}).items():
        if isinstance(entry, Mapping) and entry.get("_target_") == TEXT_SAMPLES:
            filename = entry.get("filename") or "samples.txt"
            found.append((f"callbacks.{name}.dirpath", Path(str(entry["dirpath"])) / filename))
    for name, entry in (cfg.get("logger") or {}).items():
        if not (isinstance(entry, Mapping) and str(entry.get("_target_")).endswith("CSVLogger")):
            continue
        version = entry.get("version")
        if version is None or entry.get("save_dir") is None:
            continue
        version = f"version_{version}" if isinstance(version, int) else str(version)
        # As Lightning's CSVLogger: no subfolder for an empty (or null) name.
        folder = Path(str(entry["save_dir"])) / str(entry.get("name", "lightning_logs") or "")
        found.append((f"logger.{name}.save_dir", folder / version / "metrics.csv"))
    return found


def refuse_replacing_outside_records(
    cfg: Mapping[str, Any],
    output_dir: str | Path,
    resuming: bool,
    overwrite: bool | None,
) -> None:
    """Raise LMTrainError when a new run would replace a non-empty record outside `output_dir`.

    `overwrite`: the run's overwrite_run, or None for a command that has no such switch."""
    if resuming or overwrite:
        return
    own = Path(output_dir).expanduser().resolve()
    for key, path in replaced_records(cfg):
        file = path.expanduser().resolve()
        if own in file.parents or not file.is_file() or file.stat().st_size == 0:
            continue
        or_overwrite = "" if overwrite is None else ", or overwrite_run=true to replace it"
        raise LMTrainError(
            f"{key} puts this run's {file.name} at {file}, which already holds another run's "
            f"(or a file of yours) that a new run would replace: leave {key} as configured "
            f"(the run folder), pass an empty folder{or_overwrite}"
        )
