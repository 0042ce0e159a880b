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

The refusal names the setting that took the file out of the run folder (a CSV logger's
`save_dir`, or its `name` or `version` under a save_dir in it). A CSV or TensorBoard logger's
`name`, `version` (or TensorBoard's `sub_dir`) climbing out of its `save_dir` (`..`) or an
absolute path is refused before any of this, resumed or not: `logger.csv.name=../../esc` wrote
the run's metrics.csv beside the task's run folders, where the next such run replaced it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lmtrain.errors import LMTrainError

TEXT_SAMPLES = "lmtrain.callbacks.samples.TextSamples"
# The loggers that write under `<save_dir>/<name>/<version>[/<sub_dir>]` (Lightning's, and
# lmtrain's subclasses of them), and what they write there.
FOLDER_LOGGERS = {"CSVLogger": "metrics.csv", "TensorBoardLogger": "TensorBoard events"}
# The settings below a logger's save_dir that make its folder, in the order they nest.
BELOW_SAVE_DIR = ("name", "version", "sub_dir")


class Record(NamedTuple):
    """A record a new run starts afresh: `parts`, the (setting, path) that make its folder, in
    the order they nest, and the file's name in it."""

    parts: tuple[tuple[str, str], ...]
    filename: str

    @property
    def path(self) -> Path:
        return Path(*(part for _, part in self.parts)) / self.filename

    def setting_outside(self, own: Path) -> str:
        """The first setting whose path leaves the run folder `own` (resolved)."""
        path = Path()
        for key, part in self.parts:
            path = (path / part).expanduser()
            resolved = path.resolve()
            if resolved != own and own not in resolved.parents:
                return key
        return self.parts[-1][0]


def replaced_records(cfg: Mapping[str, Any]) -> list[Record]:
    """Each record a new run of `cfg` starts afresh: the text samples' file and each CSV
    logger's metrics.csv (a logger with `version: null` writes a new version_N folder, and
    replaces nothing)."""
    found = []
    for name, entry in (cfg.get("callbacks") or {}).items():
        if isinstance(entry, Mapping) and entry.get("_target_") == TEXT_SAMPLES:
            filename = entry.get("filename") or "samples.txt"
            found.append(Record(((f"callbacks.{name}.dirpath", str(entry["dirpath"])),), filename))
    for name, entry in (cfg.get("logger") or {}).items():
        if not (isinstance(entry, Mapping) and str(entry.get("_target_")).endswith("CSVLogger")):
            continue
        version = entry.get("version")
        if version is None or entry.get("save_dir") is None:
            continue
        version = f"version_{version}" if isinstance(version, int) else str(version)
        # As Lightning's CSVLogger: no subfolder for an empty (or null) name.
        folder = str(entry.get("name", "lightning_logs") or "")
        key = f"logger.{name}"
        parts = (f"{key}.save_dir", str(entry["save_dir"])), (f"{key}.name", folder)
        found.append(Record((*parts, (f"{key}.version", version)), "metrics.csv"))
    return found


def refuse_logger_folders_leaving_save_dir(cfg: Mapping[str, Any]) -> None:
    """One line for a CSV or TensorBoard logger whose `name`, `version` or `sub_dir` leaves its
    `save_dir` (`..`, or an absolute path), naming the setting that does."""
    for logger, entry in (cfg.get("logger") or {}).items():
        if not isinstance(entry, Mapping) or entry.get("save_dir") is None:
            continue
        target = str(entry.get("_target_"))
        what = next((w for end, w in FOLDER_LOGGERS.items() if target.endswith(end)), None)
        top = os.path.abspath(str(entry["save_dir"]))
        place = top
        for key in BELOW_SAVE_DIR if what is not None else ():
            value = entry.get(key)
            if not isinstance(value, str):  # unset, or a number: version_<n>
                continue
            place = os.path.abspath(os.path.join(place, value))
            if place == top or place.startswith(top.rstrip(os.sep) + os.sep):
                continue
            setting, save_dir = f"logger.{logger}.{key}", f"logger.{logger}.save_dir"
            raise LMTrainError(
                f"{setting}={value!r} puts this run's {what} in {place}, outside {save_dir}="
                f"{entry['save_dir']}: give a {key} without '..' that is not an absolute path "
                f"(a folder in {save_dir}), or set {save_dir} to the folder to write to"
            )


def refuse_replacing_outside_records(
    cfg: Mapping[str, Any],
    output_dir: str | Path,
    resuming: bool,
    overwrite: bool | None,
) -> None:
    """Raise LMTrainError when a new run would replace a non-empty record outside `output_dir`.

    `overwrite`: the run's overwrite_run, or None for a command that has no such switch. A
    logger folder that leaves its save_dir is refused first, resumed or not."""
    refuse_logger_folders_leaving_save_dir(cfg)
    if resuming or overwrite:
        return
    own = Path(output_dir).expanduser().resolve()
    for record in replaced_records(cfg):
        file = record.path.expanduser().resolve()
        if own in file.parents or not file.is_file() or file.stat().st_size == 0:
            continue
        key = record.setting_outside(own)
        or_overwrite = "" if overwrite is None else ", or overwrite_run=true to replace it"
        raise LMTrainError(
            f"{key} puts this run's {file.name} at {file}, which already holds another run's "
            f"(or a file of yours) that a new run would replace: leave {key} as configured "
            f"(the run folder), pass an empty folder{or_overwrite}"
        )
