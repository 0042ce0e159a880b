"""A run whose checkpoints go outside its run folder (`callbacks.model_checkpoint.dirpath` on a
scratch disk) resumes, and a second run sharing that dirpath does not take its checkpoints.

Red team: `ckpt_path=last` looked only in `<run folder>/checkpoints/` and said the run saved
nothing; `ckpt_path=<dirpath>/last.ckpt` into the run's own folder was refused as another run's
checkpoint; `resume=<run folder>` found no checkpoint. The run could not be resumed at all.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmtrain.callbacks.resume_run import has_last_checkpoint, latest_run
from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.utils.safe_load import saved_step
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.killed_runs import csv_history

KEY = "callbacks.model_checkpoint.dirpath"
STEPS = 8
# Killed as step 4 ends, before its save: last.ckpt is step 2's, and steps 3-4 are trained again.
KILL = ["+callbacks.kill._target_=tests.helpers.faults.KillAtStep", "+callbacks.kill.step=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("dirpath_corpus"))


def command(root: Path, data_dir: Path, corpus: Path, run: Path, dirpath: Path | None) -> list:
    """An 8-step run into `run`, saving last.ckpt every 2 steps into `dirpath` (None: the run
    folder's checkpoints/), its losses in csv/metrics.csv."""
    return tiny_cli(
        root,
        data_dir,
        "logger=csv",
        "callbacks.text_samples=null",
        f"trainer.max_steps={STEPS}",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        *([f"{KEY}={dirpath}"] if dirpath else []),
        f"hydra.run.dir={run}",
        corpus=corpus,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, corpus: Path) -> Path:
    """The uninterrupted 8-step run the resumed ones are compared with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    out = run_cli("train", *command(root, data_dir, corpus, root / "run", None))
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run"


def killed_run(root: Path, data_dir: Path, corpus: Path) -> tuple[list, Path, Path]:
    """The command, run folder and outside dirpath of a run killed at step 4 (last.ckpt at 2)."""
    run, scratch = root / "logs" / "train" / "runs" / "A", root / "scratch" / "ckpts"
    cli = command(root, data_dir, corpus, run, scratch)
    killed = run_cli("train", *cli, *KILL)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == 2
    assert not (run / "checkpoints").exists()
    return cli, run, scratch


def assert_same_losses(run: Path, reference: Path) -> None:
    """Every step's CSV row (losses, learning rate, grad norm; wall-clock columns aside) and the
    final metrics, as the uninterrupted run wrote them."""
    ours, theirs = csv_history(run), csv_history(reference)
    losses = {step: row["train/loss"] for step, row in ours.items() if "train/loss" in row}
    assert len(losses) == STEPS
    assert losses == {
        step: row["train/loss"] for step, row in theirs.items() if "train/loss" in row
    }
    assert ours == theirs
    metrics, ref = (json.loads((d / "metrics.json").read_text()) for d in (run, reference))
    assert metrics["trainer/global_step"] == STEPS
    assert {k: metrics[k] for k in ("train/loss", "val/loss")} == {
        k: ref[k] for k in ("train/loss", "val/loss")
    }


@pytest.mark.parametrize("how", ["ckpt_path=last", "ckpt_path=<dirpath>/last.ckpt"])
def test_a_run_with_its_checkpoints_elsewhere_resumes_to_the_uninterrupted_runs_losses(
    tmp_path: Path, data_dir: Path, corpus: Path, reference: Path, how: str
) -> None:
    cli, run, scratch = killed_run(tmp_path, data_dir, corpus)
    given = "ckpt_path=last" if how == "ckpt_path=last" else f"ckpt_path={scratch / 'last.ckpt'}"
    out = run_cli("train", *cli, given)
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == STEPS
    assert not (run / "checkpoints").exists()  # nothing went to the run folder's checkpoints/
    assert_same_losses(run, reference)


def test_resume_finds_the_checkpoints_in_the_runs_saved_dirpath(
    tmp_path: Path, data_dir: Path, corpus: Path, reference: Path
) -> None:
    _, run, scratch = killed_run(tmp_path, data_dir, corpus)
    assert has_last_checkpoint(run)
    assert latest_run(tmp_path / "logs", "train") == run

    # A copy of the run folder names the same dirpath, whose checkpoints are the original's:
    # resuming the copy would go on from them and replace them.
    copy = tmp_path / "logs" / "train" / "runs" / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    before = tree_digest(scratch, skip=(".lock",))
    out = run_cli("train", f"resume={copy}", "++callbacks.kill=null")
    assert_one_line_error(out, f"resume={copy}: {copy} has no checkpoint in checkpoints/")
    assert tree_digest(scratch, skip=(".lock",)) == before

    out = run_cli("train", f"resume={run}", "++callbacks.kill=null")
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == STEPS
    assert_same_losses(run, reference)


def test_a_second_run_with_the_same_dirpath_does_not_take_the_first_ones_last_ckpt(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    scratch, first, second = tmp_path / "scratch", tmp_path / "A", tmp_path / "B"
    out = run_cli(
        "train", *command(tmp_path, data_dir, corpus, first, scratch), "trainer.max_steps=4"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before = tree_digest(scratch, skip=(".lock",))

    out = run_cli("train", *command(tmp_path, data_dir, corpus, second, scratch), "ckpt_path=last")
    assert_one_line_error(
        out,
        f"ckpt_path=last found {scratch.resolve() / 'last.ckpt'}, a checkpoint of the run in "
        f"{first}, not of hydra.run.dir={second}: resume that run with hydra.run.dir={first}, "
        f"give this run a {KEY} of its own, or pass overwrite_run=true",
    )
    assert tree_digest(scratch, skip=(".lock",)) == before
    assert not second.exists()  # refused before Hydra made the folder


def test_going_back_among_the_checkpoints_in_the_dirpath_is_refused(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    """As in the run folder's own checkpoints/ (tests/test_earlier_checkpoint.py): an earlier
    best checkpoint would replace the steps after it without a word."""
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    cli = command(tmp_path, data_dir, corpus, run, scratch)
    cli.append("callbacks.model_checkpoint.save_top_k=-1")  # keep every best-* checkpoint
    killed = run_cli("train", *cli, *KILL[:1], "+callbacks.kill.step=6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == 4
    (earlier,) = scratch.glob("best-step=2-*.ckpt")
    before = tree_digest(scratch, skip=(".lock",))
    out = run_cli("train", *cli, f"ckpt_path='{earlier}'")  # quoted: its name holds =
    assert_one_line_error(
        out,
        f"ckpt_path={earlier} (step 2) would go on in hydra.run.dir={run.resolve()}, whose "
        f"{scratch.resolve() / 'last.ckpt'} (step 4)",
        "overwrite_run=true",
    )
    assert tree_digest(scratch, skip=(".lock",)) == before


def test_ckpt_path_last_with_a_remote_dirpath_and_nothing_saved_locally_is_one_line(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    cli = command(tmp_path, data_dir, corpus, tmp_path / "run", None)
    out = run_cli("train", *cli, f"{KEY}=s3://bucket/ckpts", "ckpt_path=last")
    assert_one_line_error(
        out, f"ckpt_path=last looks in the run folder and in a local {KEY}, not in s3://bucket/"
    )


def test_preemption_and_nan_guard_saves_go_where_ckpt_path_last_looks(tmp_path: Path) -> None:
    """`last_checkpoint_path`: the dirpath's last.ckpt when the dirpath is outside the run folder;
    the run folder's checkpoints/last.ckpt otherwise (inside it, linked from it, remote, or no
    callback)."""
    run, outside = tmp_path / "run", tmp_path / "scratch"

    def trainer(dirpath: object) -> SimpleNamespace:
        callback = None if dirpath is None else SimpleNamespace(dirpath=dirpath)
        return SimpleNamespace(default_root_dir=str(run), checkpoint_callback=callback)

    assert last_checkpoint_path(trainer(str(outside))) == outside.resolve() / "last.ckpt"
    own = run / "checkpoints" / "last.ckpt"
    for dirpath in (str(run / "checkpoints"), str(run / "ckpts"), "s3://bucket/ckpts", None):
        assert last_checkpoint_path(trainer(dirpath)) == own
    # checkpoints/ linked to scratch storage (Lightning resolves the link): still the run's.
    linked = tmp_path / "linked"
    linked.mkdir()
    run.mkdir()
    (run / "checkpoints").symlink_to(linked)
    assert last_checkpoint_path(trainer(str(linked.resolve()))) == own


def test_a_requeued_slurm_job_resumes_from_its_last_ckpt_in_the_dirpath(
    tmp_path: Path, data_dir: Path, corpus: Path, reference: Path
) -> None:
    """SLURM runs the same command again after a requeue: it looked for last.ckpt only in the
    run folder, found none, and refused the dirpath's as another run's (review of this change)."""
    cli, run, scratch = killed_run(tmp_path, data_dir, corpus)
    out = run_cli("train", *cli, env={"SLURM_RESTART_COUNT": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Requeued SLURM job: resuming from" in (run / "train.log").read_text()
    assert saved_step(scratch / "last.ckpt") == STEPS
    assert_same_losses(run, reference)


def test_a_preempted_run_with_a_dirpath_named_checkpoints_names_its_own_run_folder(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    """`<scratch>/train/checkpoints/last.ckpt` was taken for `<run>/checkpoints/last.ckpt`: the
    line said hydra.run.dir=<scratch>/train, a new run folder (review of this change); then
    `ckpt_path=<file>`, a new run folder too (red team rev_docs17)."""
    run, scratch = tmp_path / "run", tmp_path / "scratch" / "train" / "checkpoints"
    cli = command(tmp_path, data_dir, corpus, run, scratch)
    signal_at = ["+callbacks.stop._target_=tests.helpers.faults.SignalBeforeValidation"]
    out = run_cli("train", *cli, *signal_at, "+callbacks.stop.signal=SIGTERM")
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    line = assert_one_line_error(out, "preempted by SIGTERM at step ")
    assert line.endswith(f"resume with resume={run}"), line
    assert (scratch / "last.ckpt").is_file()
    # The line's command goes on in the run folder from the dirpath's last.ckpt, up to the
    # next step a validation follows, where the restored fault preempts it again.
    step = saved_step(scratch / "last.ckpt")
    out = run_cli("train", f"resume={run}", f"++{signal_at[0][1:]}")
    line = assert_one_line_error(out, "preempted by SIGTERM at step ")
    assert line.endswith(f"resume with resume={run}"), line
    assert saved_step(scratch / "last.ckpt") > step


def test_a_plain_trainer_after_hydra_is_not_told_the_stale_run_folder(
    compose_cfg, tmp_path: Path
) -> None:
    """In a process that ran Hydra before (a notebook, these tests), Hydra's config names that
    run's folder: a plain Trainer whose dirpath lies outside it was told to resume there."""
    from lmtrain.utils.resume_hints import resume_hint

    compose_cfg()  # the Hydra job of an earlier run in this process, its folder elsewhere
    root, scratch = tmp_path / "notebook", tmp_path / "scratch" / "ckpts"
    assert resume_hint(scratch / "last.ckpt", root) == f"resume with ckpt_path={scratch}/last.ckpt"
    own = root / "checkpoints" / "last.ckpt"
    assert resume_hint(own, root) == f"resume with ckpt_path=last hydra.run.dir={root}"


def test_ckpt_path_last_without_the_runs_dirpath_names_it_not_overwrite_run(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    """The command typed again without its dirpath was told the run saved no checkpoint, and to
    start it again with overwrite_run=true: its files replaced, its checkpoints forgotten (red
    team rev_docs17)."""
    _, run, scratch = killed_run(tmp_path, data_dir, corpus)
    before = tree_digest(run, skip=(".lock", "train.log"))
    out = run_cli("train", *command(tmp_path, data_dir, corpus, run, None), "ckpt_path=last")
    assert_one_line_error(
        out,
        f"error: ckpt_path=last: the run in {run} saved its checkpoints to {KEY}="
        f"{scratch.resolve()}, which this command does not name: pass {KEY}={scratch.resolve()} "
        f"too, or resume with resume={run}",
    )
    assert tree_digest(run, skip=(".lock", "train.log")) == before
