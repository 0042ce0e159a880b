"""`resume=<run folder>` and `resume=latest`: continue a run from its own record.

Typing a run's overrides again to resume it (`ckpt_path=last hydra.run.dir=<run> ...`) trains a
different run when one is forgotten. With `resume=`, the run's saved composed config
(`<run>/.hydra/config.yaml`) is the base, the overrides typed with `resume=` go on top, and the
run continues from its `checkpoints/last.ckpt` in its own folder (so with its W&B run id, see
`lmtrain.utils.wandb_run`), or from the last.ckpt it saved to its dirpath elsewhere (a scratch
disk; `ckpt_path=last` finds it too: `locate_last_elsewhere`). `resume=latest` is the run of
this `task_name` under `${paths.log_dir}/<task_name>/{runs/*,multiruns/*/*}` whose last.ckpt
was written last.

Hydra names the run folder and writes `.hydra/` into it before the task starts, so this is a
Hydra callback (`ResumeRun`, first in `configs/train.yaml`'s `hydra.callbacks`): it reads the
saved config and replaces the composed one before Hydra uses it; `lmtrain.utils.resume_overrides`
applies the typed overrides and refuses, in one line, those that would change the model's shape
or the data. Once the resumed run has started (`lmtrain.callbacks.resumed_record`: its
checkpoint restored, every check passed), the folder's `.hydra/` files hold the config it uses,
written atomically (a run that had ended and trains nothing leaves them as they were);
the ones they replace are kept in `.hydra/previous/<time>/`. A command refused before that
leaves them as they were, so `resume=<run>` alone still resumes the run; so does a command
typed in a folder that already holds a record (`ckpt_path=last hydra.run.dir=<run>`). DDP ranks
> 0 (which Lightning starts with `hydra.run.dir=<folder>`), torchrun and SLURM ranks, and
requeued jobs repeat the command: they read the same folder and reach the same config, and only
rank 0 writes.
"""

from __future__ import annotations

import copy
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback as HydraCallback
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from lmtrain.callbacks.resumed_record import WriteResumedRecord as WriteResumedRecord
from lmtrain.callbacks.resumed_record import pend_record
from lmtrain.callbacks.resumed_record import write_resumed_record as write_resumed_record
from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint_paths import last_elsewhere, run_checkpoint, saved_checkpoint_folder
from lmtrain.models.unfound_checkpoint import unfound_checkpoint
from lmtrain.utils.checkpoint_dirpaths import KEY
from lmtrain.utils.checkpointless_run import RAN_WITHOUT, ran_without_checkpoints
from lmtrain.utils.checks import Problems, check_run_references, strict_bool
from lmtrain.utils.launch import set_rank_from_node
from lmtrain.utils.linked_files import refuse_linked_files
from lmtrain.utils.outside_checkpoints import configured_dirpath, outside_folder
from lmtrain.utils.override_text import override_arg
from lmtrain.utils.record_rank import global_rank, leave_record_to_rank_zero
from lmtrain.utils.resume_overrides import check_same_entry_point, load_saved, resumed_config
from lmtrain.utils.run_dir_checks import refuse_unmade_folder
from lmtrain.utils.run_record import record_files, write_record
from lmtrain.utils.sharded_layout import is_sharded_checkpoint
from lmtrain.utils.stored_targets import check_resumed
from lmtrain.utils.task import fail
from lmtrain.utils.unresolved_folder import as_typed, refuse_unnamed_folder

log = logging.getLogger(__name__)

LATEST = "latest"
RECORD = ".hydra"  # Hydra's hydra.output_subdir, where a run's config is saved


class ResumeRun(HydraCallback):
    """Hydra callback: with `resume=` set, point the run at the resumed folder and its config."""

    def __init__(self) -> None:
        self.record: str | None = None  # the .hydra subfolder this process writes, if any

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **_: Any) -> None:
        # Here, before Hydra makes a run folder for nothing (the config checks say it too).
        problems = Problems()
        check_run_references(config, problems)
        if problems.found:
            fail(problems.found[0])
        # ~task_name, ~paths named as removed; an unset ${oc.env:X} in the folder named
        guarded(lambda: refuse_unnamed_folder(config, "hydra.run.dir"))
        guarded(lambda: refuse_unmade_folder(config, "hydra.run.dir"))  # `~/run`: not expanded
        guarded(lambda: global_rank(config))  # a node's first process: not rank 0
        if resume_value(config) not in (None, ""):
            guarded(lambda: self.prepare(config, config_name or "train"))
        else:
            self.defer_record_in_used_folder(config)
        leave_record_to_rank_zero(config)  # torchrun's, srun's ranks > 0 write no .hydra/
        guarded(lambda: locate_last_elsewhere(config))  # before the run folder is claimed

    def on_multirun_start(self, config: DictConfig, **_: Any) -> None:
        """`-m resume=A,B` is in the sweep's overrides only (its base config has none); a plain
        `resume=` override is in the base config, resolved (`${oc.env:RUN,null}` may be null)."""
        texts = OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or []
        parsed = OverridesParser.create().parse_overrides([str(o) for o in texts])
        swept = [o for o in parsed if o.key_or_group == "resume" and o.is_sweep_override()]
        value = swept[0].input_line.split("=", 1)[1] if swept else resume_value(config)
        if value not in (None, ""):
            fail(
                f"resume={value} continues one run, not a sweep: drop -m/--multirun "
                "(resume a sweep's job with resume=<sweep folder>/<job number>)"
            )

    def on_job_start(self, config: DictConfig, **_: Any) -> None:
        record = self.record
        if record is None:
            pend_record(None)  # an earlier job's in this process (refused, or a notebook's)
            return
        files = guarded(lambda: record_files(config, record))
        folder = Path(str(config.hydra.runtime.output_dir)) / record
        pend_record(lambda: write_record(folder, files))  # by resumed_record.WriteResumedRecord

    def defer_record_in_used_folder(self, config: DictConfig) -> None:
        """A command run in a folder that already holds a run's record (`ckpt_path=last
        hydra.run.dir=<run>`, `overwrite_run=true`) writes its `.hydra/` once training starts,
        as `resume=` does: a command refused at the checkpoint's restore (another model shape,
        other LoRA adapters) must not replace the config that `resume=<run>` reads."""
        named, record = named_run_dir(config), config.hydra.output_subdir
        if named is None or not record or not (named / str(record) / "config.yaml").is_file():
            return
        with read_write(config):
            self.record = str(record) if rank_zero_only.rank == 0 else None
            config.hydra.output_subdir = None

    def prepare(self, config: DictConfig, config_name: str) -> None:
        """Replace `config`'s task part with the resumed run's config and set its run folder."""
        value = str(config.resume)
        if config.get("ckpt_path") not in (None, "last"):
            raise LMTrainError(
                f"resume={value} resumes from the run's own last.ckpt (in checkpoints/ or its "
                f"dirpath), and ckpt_path={config.ckpt_path} names one: drop ckpt_path, or go on "
                "from that file with ckpt_path=<file> hydra.run.dir=<run folder> and no resume="
            )
        named = named_run_dir(config)
        folder = run_folder(value, named, Path(config.paths.log_dir), str(config.task_name))
        refuse_linked_files(folder, "resume", "resume another run")  # before its record is read
        record = str(config.hydra.output_subdir or RECORD)
        saved, saved_choices = load_saved(value, folder / record)
        check_same_entry_point(value, folder / record, saved, config_name)
        resumed, groups = resumed_config(value, config, config_name, saved, saved_choices)
        # A shared folder is data, not code.
        check_resumed(value, own_dirpath_inside(resumed, folder), config, folder)
        with read_write(config), open_dict(config):
            for key in [k for k in config if k != "hydra"]:
                del config[key]
            for key, node in resumed.items():
                config[key] = node
            config.resume, config.ckpt_path = str(folder), "last"
            hydra = config.hydra
            hydra.run.dir = str(folder)
            if named is None:  # what torchrun and several-node launches check for
                hydra.overrides.hydra.append(f"hydra.run.dir={folder}")
            hydra.runtime.choices.update(
                {k: v for k, v in saved_choices.items() if not str(k).startswith("hydra/")}
            )
            hydra.runtime.choices.update(groups)
            set_rank_from_node(config)
            # Hydra's own save is not atomic, and under torchrun every rank would make it.
            self.record = record if rank_zero_only.rank == 0 and hydra.output_subdir else None
            hydra.output_subdir = None


def locate_last_elsewhere(config: DictConfig, run_dir: Path | None = None) -> None:
    """`ckpt_path=last` of a run whose checkpoints go outside its folder (its dirpath on a
    scratch disk): the file there (`last_elsewhere`), as Lightning's own `last` looks in the
    dirpath. Set at the run's start, where the command's whole config is at hand, so that the
    run folder's claim and lmtrain.train see the file, and whether that run saved it; `train(cfg)`
    from Python, which no Hydra callback sees, calls it with its run folder `run_dir`."""
    if config.get("ckpt_path") != "last":
        return
    run_dir = run_dir or Path(str(config.hydra.run.dir))
    overwrite = strict_bool("overwrite_run", config.get("overwrite_run", False))
    path = last_elsewhere(configured_dirpath(config, run_dir), run_dir, overwrite)
    if path is not None:
        with read_write(config), open_dict(config):
            config.ckpt_path = str(path)


def own_dirpath_inside(resumed: DictConfig, folder: Path) -> DictConfig:
    """`resumed` as `check_resumed` judges it: a saved dirpath outside the run folder that holds
    the run's own checkpoints (`saved_checkpoint_folder`) is the run's, as its checkpoints/
    would be; any other dirpath outside it stays, for that check to refuse."""
    own = saved_checkpoint_folder(folder)
    if own is None or outside_folder(configured_dirpath(resumed, folder), folder) != own:
        return resumed
    checked = copy.deepcopy(resumed)
    OmegaConf.update(checked, KEY, str(folder / "checkpoints"))
    return checked


def guarded(step: Callable[[], Any]) -> Any:
    """Run a callback step so that nothing it raises is lost: Hydra turns a callback's exception
    into a warning, and the run would go on as a new run instead of the resumed one."""
    try:
        return step()
    except LMTrainError as err:
        fail(str(err))
    except Exception:
        traceback.print_exc()
        raise SystemExit(1) from None


def named_run_dir(config: DictConfig) -> Path | None:
    """The folder `hydra.run.dir=` names on the command line, if it does."""
    typed = any(o.startswith("hydra.run.dir=") for o in as_typed(config.hydra.overrides.hydra))
    return Path(str(config.hydra.run.dir)) if typed else None  # as Hydra writes it: no `~`


def run_folder(value: str, named: Path | None, log_dir: Path, task_name: str) -> Path:
    """The run folder `resume=<value>` names; `named`: the one hydra.run.dir names, the folder
    of a DDP rank > 0 (Lightning passes rank 0's) and of `resume=latest` when given."""
    given = Path(value).expanduser()  # resume=~/run: lmtrain reads this value, and expands `~`
    if named is not None and (value == LATEST or given.resolve() == named.resolve()):
        folder = named
    elif named is not None:
        raise LMTrainError(
            f"resume={value} and hydra.run.dir={named} name two folders: drop hydra.run.dir "
            "(a resumed run goes on in its own folder)"
        )
    elif value == LATEST:
        found = latest_run(log_dir, task_name)
        if found is None:
            raise LMTrainError(
                f"resume=latest found no run of task_name={task_name} with checkpoints/last.ckpt "
                f"under {log_dir / task_name}/runs or multiruns: pass resume=<run folder>, or the "
                "run's task_name=... and paths.log_dir=..."
            )
        folder = found
        other = latest_run(log_dir, "*")  # the newest run of any task_name
        if other is not None and other.resolve() != found.resolve():
            log.warning(
                "resume=latest picked %s, the newest run of task_name=%s; a newer run of another "
                "task_name is %s: to go on with that one, pass resume=%s (or its experiment=)",
                found,
                task_name,
                other,
                other,
            )
    else:
        folder = given
    if not folder.is_dir():
        raise LMTrainError(
            f"resume={value} is not a folder: pass a run folder "
            "(logs/<task_name>/runs/<time>), or resume=latest"
        )
    if not has_last_checkpoint(folder) and has_last_checkpoint(folder.parent):
        raise LMTrainError(  # the checkpoints/ folder itself, or another subfolder of the run
            f"resume={value} is inside a run folder: pass the run folder, "
            f"{override_arg('resume', folder.parent)}"
        )
    sweep = (folder / "multirun.yaml").is_file()  # Hydra writes it into a sweep's folder
    jobs = (
        [j.name for j in folder.iterdir() if j.is_dir() and has_last_checkpoint(j)] if sweep else []
    )
    jobs.sort(key=lambda name: (len(name), name))  # 2 before 10
    if jobs and not has_last_checkpoint(folder):
        raise LMTrainError(
            f"resume={value} is a sweep's folder, and resume= continues one run: pass one of its "
            f"jobs, {override_arg('resume', folder / jobs[0])} (jobs with a checkpoint: "
            f"{', '.join(jobs)})"
        )
    if not has_last_checkpoint(folder):
        why, without = "has no checkpoint in checkpoints/", ran_without_checkpoints(folder)
        if not without and (elsewhere := unfound_checkpoint(folder)) is not None:  # dirpath
            raise LMTrainError(f"resume={value}: {folder} {why}: {elsewhere}")
        raise LMTrainError(
            f"resume={value}: {folder} {RAN_WITHOUT if without else why + ' to resume from'}:"
            " pass the folder of a run that saved one, or start a new run without resume="
        )
    return folder.resolve()


def latest_run(log_dir: Path, task_name: str) -> Path | None:
    """The run or multirun job of `task_name` (a glob: `*`, any) whose last.ckpt was written
    last, if any."""
    root = Path(log_dir).expanduser()  # a config of the user's that builds run.dir otherwise
    folders = [*root.glob(f"{task_name}/runs/*"), *root.glob(f"{task_name}/multiruns/*/*")]
    found = [
        (run_checkpoint(f).stat().st_mtime_ns, str(f), f)
        for f in folders
        if f.is_dir() and has_last_checkpoint(f)
    ]
    return max(found)[2] if found else None


def has_last_checkpoint(folder: Path) -> bool:
    """checkpoints/last.ckpt (a file, or a sharded folder: `trainer=fsdp`, or its copy kept by a
    save cut short), or else another checkpoint there (`newest_checkpoint`), or one the run
    saved to its dirpath elsewhere (`run_checkpoint`)."""
    path = run_checkpoint(folder)  # which one: the run's own check
    return path.is_file() or is_sharded_checkpoint(path)


def resume_value(cfg: DictConfig) -> Any:
    """`resume`, or None when its `${...}` does not resolve (the config checks name that)."""
    return OmegaConf.select(cfg, "resume", throw_on_resolution_failure=False)


def log_resume(cfg: DictConfig) -> None:
    """Say which run this one continues (in the run's log); refuse a `resume=` that no
    `ResumeRun` callback applied, which would otherwise start a new run."""
    if resume_value(cfg) in (None, ""):
        return
    if Path(str(cfg.resume)).resolve() != Path(cfg.paths.output_dir).resolve():
        fail(
            f"resume={cfg.resume} was not applied (configs/train.yaml's hydra.callbacks lacks "
            "resume_run: lmtrain.callbacks.resume_run.ResumeRun): add it back"
        )
    typed = [o for o in as_typed(HydraConfig.get().overrides.task) if o.startswith("resume=")]
    if typed == [f"resume={LATEST}"]:
        log.info(
            "resume=latest: resuming %s, the run of task_name=%s whose last.ckpt is the newest",
            cfg.resume,
            cfg.task_name,
        )
    else:
        log.info("Resuming %s from its checkpoints/ (last.ckpt, else the newest)", cfg.resume)
