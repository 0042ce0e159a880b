"""`resume=<run folder>` and `resume=latest` (callbacks/resume_run.py, utils/resume_overrides.py).

The slow tests run the real CLI: a run killed with SIGKILL (`tests/helpers/killed_runs.py`),
copied for each test, is resumed from its own saved config, refused when an override would change
its model's shape, and found by `resume=latest` among other runs. The fast tests apply overrides
to a saved config in-process, as the Hydra callback does.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from lmtrain.callbacks.resume_run import ResumeRun, run_folder
from lmtrain.errors import LMTrainError
from lmtrain.utils.resume_overrides import resumed_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import CONFIG_DIR, TINY
from tests.helpers.killed_runs import (
    STEPS,
    assert_same_run,
    finish,
    kill,
    resumable_corpus,
    start,
    train_command,
    uninterrupted_run,
    wait_for_saves,
)

FINAL_WEIGHTS = "+callbacks.final_weights.path="
# The killed run's own callbacks, which no project config names: resume= builds them only when
# the command names them again (a run folder's config is data, see utils/stored_targets.py).
RESTATED = [
    "++callbacks.exact_resume._target_=lmtrain.callbacks.resume.ExactResume",
    "++callbacks.final_weights._target_=tests.helpers.killed_runs.SaveFinalWeights",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resumable_corpus(tmp_path_factory.mktemp("resume_run_corpus"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: Path, data_dir: Path) -> Path:
    """The uninterrupted run a resumed one is compared with."""
    return uninterrupted_run(tmp_path_factory.mktemp("reference"), corpus, data_dir)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path, data_dir: Path) -> Path:
    """A run killed with SIGKILL a moment after its first last.ckpt; tests resume copies of it.

    Its final weights go to `${paths.output_dir}`, so that a copy resumed elsewhere writes its own.
    """
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    command = [
        f"{FINAL_WEIGHTS}${{paths.output_dir}}/final_weights.pt"
        if o.startswith(FINAL_WEIGHTS)
        else o
        for o in train_command(corpus, data_dir, run_dir)
    ]
    last, log = run_dir / "checkpoints" / "last.ckpt", run_dir.parent / "train.out"
    proc = start(command, log)
    wait_for_saves(proc, last, 1)
    time.sleep(0.2)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]
    assert step_of(run_dir) < STEPS
    return run_dir


def step_of(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def copy_run(source: Path, target: Path, checkpoint_mtime_ns: int | None = None) -> Path:
    shutil.copytree(source, target)
    if checkpoint_mtime_ns is not None:
        last = target / "checkpoints" / "last.ckpt"
        os.utime(last, ns=(checkpoint_mtime_ns, checkpoint_mtime_ns))
    return target


def train(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "lmtrain.train", *overrides, *RESTATED]


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` (relative path), with its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_killed_run_resumed_with_resume_alone_ends_as_an_uninterrupted_one(
    tmp_path: Path, killed_run: Path, reference: Path
) -> None:
    run_dir = copy_run(killed_run, tmp_path / "run")
    original = (run_dir / ".hydra" / "config.yaml").read_text()
    finish(train(f"resume={run_dir}"), tmp_path / "train.out")

    assert_same_run(run_dir, reference)
    # The folder's record is the config the resumed run used; the one it replaced is kept.
    record = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert record.resume == str(run_dir.resolve()) and record.ckpt_path == "last"
    assert OmegaConf.load(run_dir / ".hydra" / "overrides.yaml") == [f"resume={run_dir}", *RESTATED]
    (previous,) = (run_dir / ".hydra" / "previous").iterdir()
    assert (previous / "config.yaml").read_text() == original


@pytest.mark.slow
def test_resume_that_changes_the_model_shape_is_refused_in_one_line_and_changes_nothing(
    tmp_path: Path, killed_run: Path
) -> None:
    run_dir = copy_run(killed_run, tmp_path / "run")
    before = files_of(run_dir)
    result = run_cli(
        "train",
        f"resume={run_dir}",
        "model.config.n_embd=64",  # the run's is 32
        "data.block_size=16",
        "model.config.n_layer=2",  # as the run's: no change
        "trainer.max_steps=80",  # may change
    )
    line = assert_one_line_error(
        result, f"resume={run_dir}", "model.config.n_embd=64, data.block_size=16 would change"
    )
    assert "n_layer" not in line and "max_steps" not in line
    assert files_of(run_dir) == before


@pytest.mark.slow
def test_resume_refused_after_the_config_is_read_leaves_the_run_folder_as_it_was(
    tmp_path: Path, killed_run: Path
) -> None:
    """Refusals that come after `resume=` has read the run (a bad value, a trainer that cannot
    be built) must not leave their overrides in `.hydra/`, where `resume=<run>` alone would
    read them next time."""
    run_dir = copy_run(killed_run, tmp_path / "run")
    before = files_of(run_dir / ".hydra"), files_of(run_dir / "checkpoints")
    bad_value = run_cli("train", f"resume={run_dir}", "model.optimizer.lr=abc", *RESTATED)
    assert_one_line_error(bad_value, "model.optimizer.lr='abc' is not a finite number")
    bad_trainer = run_cli("train", f"resume={run_dir}", "trainer.precision=bogus", *RESTATED)
    assert_one_line_error(bad_trainer, "bogus")
    # The refusals are in train.log; the run's record and checkpoints are as they were.
    assert (files_of(run_dir / ".hydra"), files_of(run_dir / "checkpoints")) == before


@pytest.mark.slow
def test_ckpt_path_last_refused_at_restore_leaves_the_record_and_a_good_one_replaces_it(
    tmp_path: Path, killed_run: Path, corpus: Path, data_dir: Path
) -> None:
    """The hand-typed resume (`ckpt_path=last hydra.run.dir=<run>`) defers its `.hydra/` as
    `resume=` does: refused when the checkpoint is restored (another model shape), it leaves
    the record `resume=<run>` reads; a resume that trains writes it, keeping the old one."""
    run_dir = copy_run(killed_run, tmp_path / "run")
    record, original = run_dir / ".hydra", files_of(run_dir / ".hydra")
    command = train_command(corpus, data_dir, run_dir, "ckpt_path=last")
    refused = run_cli("train", *command[3:], "model.config.n_embd=64")
    assert_one_line_error(refused, "holds another model: n_embd=32 in the checkpoint but 64")
    assert files_of(record) == original

    finish(command, tmp_path / "train.out")
    assert step_of(run_dir) == STEPS
    assert OmegaConf.load(record / "config.yaml").ckpt_path == "last"
    (previous,) = (record / "previous").iterdir()
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == {
        name: content for name, (content, _) in original.items()
    }


@pytest.mark.slow
def test_resume_latest_continues_the_run_of_this_task_with_the_newest_last_ckpt(
    tmp_path: Path, killed_run: Path
) -> None:
    logs, now = tmp_path / "logs", time.time_ns()
    runs = logs / "train" / "runs"
    older = copy_run(killed_run, runs / "2026-01-01_00-00-00_000000", now - 300 * 10**9)
    picked = copy_run(killed_run, runs / "2026-01-02_00-00-00_000000", now - 100 * 10**9)
    job = copy_run(killed_run, logs / "train" / "multiruns" / "2026-01-02" / "0", now - 200 * 10**9)
    other_task = copy_run(killed_run, logs / "other" / "runs" / "2026-01-04_00-00-00_000000", now)
    no_checkpoint = runs / "2026-01-03_00-00-00_000000"  # newest, died before its first save
    (no_checkpoint / ".hydra").mkdir(parents=True)
    untouched = {f: files_of(f) for f in (older, job, other_task, no_checkpoint)}
    steps = step_of(picked) + 2

    out = tmp_path / "train.out"
    finish(train("resume=latest", f"paths.log_dir={logs}", f"trainer.max_steps={steps}"), out)
    assert f"resume=latest: resuming {picked}, the run of task_name=train" in out.read_text()
    assert step_of(picked) == steps
    assert OmegaConf.load(picked / ".hydra" / "config.yaml").trainer.max_steps == steps
    assert {f: files_of(f) for f in untouched} == untouched


def test_ckpt_path_last_refuses_other_windows_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    """The `ckpt_path=last hydra.run.dir=<run>` form (every override typed again) goes on with the
    run's training windows, as resume= does: another block size or seed is refused."""
    run = tmp_path / "run"
    cli = [*tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv")]
    assert run_cli("train", *cli, f"hydra.run.dir={run}").returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    again = [*cli, f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=6"]
    out = run_cli("train", *again, "data.block_size=16")
    assert_one_line_error(out, "other windows: data.block_size=16 (the run's: 32)")
    out = run_cli("train", *again, "seed=7")
    assert_one_line_error(out, "data.seed=7 (the run's: 1337)")
    assert last.read_bytes() == before
    assert run_cli("train", *again).returncode == 0  # the run's own windows: it goes on


def test_another_accumulation_off_a_step_boundary_is_refused_in_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """3 steps of 2 micro-batches end 6 micro-batches in: 4 a step would cut the first resumed
    step short; 3 a step starts a whole step there."""
    run = tmp_path / "run"
    cli = [*tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv")]
    cli += [f"hydra.run.dir={run}", "trainer.val_check_interval=100"]
    assert run_cli("train", *cli, "trainer.max_steps=3", "global_batch_size=16").returncode == 0
    again = [*cli, "ckpt_path=last", "trainer.max_steps=5"]
    out = run_cli("train", *again, "global_batch_size=32")
    assert_one_line_error(out, "6 micro-batches into its epoch at 2 micro-batches a step")
    out = run_cli("train", *again, "global_batch_size=24")
    assert out.returncode == 0, out.stderr[-3000:]


def test_resume_of_a_folder_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    result = run_cli("train", f"resume={tmp_path / 'nowhere'}")
    assert_one_line_error(result, f"resume={tmp_path / 'nowhere'} is not a folder", "latest")


@pytest.mark.parametrize("swept", [["resume=a,b"], ["resume=latest", "seed=1,2"]])
def test_resume_in_a_sweep_is_refused_before_any_job(tmp_path: Path, swept: list[str]) -> None:
    """`-m resume=a,b` was told to restore a callback that was there, after job 0's folder."""
    logs = tmp_path / "logs"
    result = run_cli("train", "-m", f"paths.log_dir={logs}", *swept)
    value = swept[0].removeprefix("resume=")
    assert_one_line_error(result, f"resume={value} continues one run, not a sweep: drop -m")
    assert not logs.exists()


UNSET_ENV = "${oc.env:LMTRAIN_TEST_NEVER_SET,null}"


@pytest.mark.parametrize(
    ("typed", "base", "refused"),
    [
        ("resume=null", None, None),
        ("resume=''", "", None),
        (f"resume={UNSET_ENV}", UNSET_ENV, None),  # resolves to null
        ("resume=a,b", None, "resume=a,b"),  # a sweep: in the overrides only
        ("++resume=a,b", None, "resume=a,b"),
        ("resume=a", "a", "resume=a"),
    ],
)
def test_a_sweep_is_refused_only_with_resume_set(
    typed: str, base: str | None, refused: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-m seed=1,2 resume=null` sweeps new runs; the config is what Hydra hands the callback:
    a plain override applied to the base config, a sweep's left out of it."""
    overrides = ["seed=1,2", typed]
    config = OmegaConf.create({"resume": base, "hydra": {"overrides": {"task": overrides}}})
    if refused is None:
        ResumeRun().on_multirun_start(config)  # returns: no refusal
        return
    with pytest.raises(SystemExit):
        ResumeRun().on_multirun_start(config)
    assert f"{refused} continues one run, not a sweep" in capsys.readouterr().err


def test_run_folder_refuses_what_cannot_be_resumed_and_follows_a_named_folder(
    tmp_path: Path,
) -> None:
    run = tmp_path / "logs" / "train" / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(LMTrainError, match=r"resume=latest found no run of task_name=train"):
        run_folder("latest", None, tmp_path / "logs", "train")
    with pytest.raises(LMTrainError, match=r"has no checkpoint in checkpoints/ to resume from"):
        run_folder(str(run), None, tmp_path / "logs", "train")
    (run / "checkpoints" / "last.ckpt").touch()
    assert run_folder("latest", None, tmp_path / "logs", "train") == run.resolve()
    # DDP ranks > 0 get rank 0's folder as hydra.run.dir: resume=latest resumes that one.
    other = tmp_path / "elsewhere"
    shutil.copytree(run, other)
    assert run_folder("latest", other, tmp_path / "logs", "train") == other.resolve()
    with pytest.raises(LMTrainError, match=r"name two folders: drop hydra.run.dir"):
        run_folder(str(run), other, tmp_path / "logs", "train")


def test_resume_of_a_sweeps_folder_names_its_jobs(tmp_path: Path) -> None:
    """The sweep's folder itself said only "has no checkpoint" (red team rev_sweep14)."""
    sweep = tmp_path / "multiruns" / "t"
    for job in ("10", "2", "3"):
        (sweep / job / "checkpoints").mkdir(parents=True)
        if job != "3":
            (sweep / job / "checkpoints" / "last.ckpt").touch()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(LMTrainError) as refused:
        run_folder(str(sweep), None, tmp_path / "logs", "train")
    assert str(refused.value) == (
        f"resume={sweep} is a sweep's folder, and resume= continues one run: pass one of its "
        f"jobs, resume={sweep / '2'} (jobs with a checkpoint: 2, 10)"
    )


def test_resume_latest_names_a_newer_run_of_another_task(tmp_path: Path, caplog) -> None:
    """After `experiment=X` (task_name X), `resume=latest` alone looks under task `train`: it
    says that a newer run exists elsewhere, and how to pick it."""
    older = tmp_path / "logs" / "train" / "runs" / "a"
    newer = tmp_path / "logs" / "shakespeare_char_fast" / "runs" / "b"
    for seconds, run in enumerate((older, newer)):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").touch()
        os.utime(run / "checkpoints" / "last.ckpt", (1e9 + seconds, 1e9 + seconds))
    with caplog.at_level("WARNING"):
        assert run_folder("latest", None, tmp_path / "logs", "train") == older.resolve()
    assert f"a newer run of another task_name is {newer}" in caplog.text
    assert f"resume={newer}" in caplog.text


def composed(*overrides: str) -> tuple[DictConfig, DictConfig]:
    """The task config (as Hydra saves it) and the whole config with `hydra`."""
    whole = compose("train", list(overrides), return_hydra_config=True)
    task = OmegaConf.masked_copy(whole, [k for k in whole if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(task)), whole


def test_resumed_config_is_the_saved_one_with_the_typed_overrides_on_top() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        saved, run = composed(*TINY, "logger=csv", "+extra.note=first", "~samples.top_k")
        choices = dict(run.hydra.runtime.choices)
        typed = [
            "resume=x",
            "trainer.max_steps=80",
            "model.optimizer.lr=0.01",
            "+extra.note=first",  # typed again as in the run's command
            "~samples.top_k",
            "model=gpt2_tiny",  # the run's own option: nothing to apply
            "callbacks=none",  # another option: replaces that part of the config
        ]
        _, command = composed(*typed)
        resumed, groups = resumed_config("x", command, "train", saved, choices)
        # Applying the same overrides to the result changes nothing (DDP ranks > 0, requeues).
        again, _ = resumed_config("x", command, "train", resumed, {**choices, **groups})

    assert again == resumed
    assert groups == {"callbacks": "none"}
    assert resumed.model.config == saved.model.config  # TINY's, never typed here
    assert resumed.logger == saved.logger  # csv, not the default W&B
    assert resumed.trainer.max_steps == 80 and resumed.model.optimizer.lr == 0.01
    assert resumed.extra.note == "first" and "top_k" not in resumed.samples
    assert resumed.callbacks == {}
    assert OmegaConf.to_container(resumed.data) == OmegaConf.to_container(saved.data)


def test_another_option_of_a_group_changes_what_the_option_sets_and_keeps_the_runs_keys() -> None:
    """`trainer=ddp_cpu` on resume moves to DDP; the run's own trainer keys (its length, clipping,
    validation cadence) stay, as keys typed with it win."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        saved, run = composed(*TINY, "trainer.max_steps=20", "trainer.gradient_clip_val=0.5")
        choices = dict(run.hydra.runtime.choices)
        _, command = composed("resume=x", "trainer=ddp_cpu")
        ddp, groups = resumed_config("x", command, "train", saved, choices)
        _, command = composed("resume=x", "trainer.max_steps=99", "trainer=gpu", "logger=csv")
        gpu, _ = resumed_config("x", command, "train", saved, choices)

    assert groups == {"trainer": "ddp_cpu"}
    assert (ddp.trainer.devices, ddp.trainer.strategy.process_group_backend) == (2, "gloo")
    kept = ("max_steps", "gradient_clip_val", "val_check_interval", "log_every_n_steps")
    assert {k: ddp.trainer[k] for k in kept} == {k: saved.trainer[k] for k in kept}
    assert (gpu.trainer.accelerator, gpu.trainer.precision) == ("gpu", "bf16-mixed")
    assert gpu.trainer.max_steps == 99 and gpu.trainer.gradient_clip_val == 0.5
    assert list(gpu.logger) == ["csv"]


def test_a_fixed_key_typed_with_the_value_it_resolved_to_is_not_a_change() -> None:
    """`data.seed` is `${oc.select:seed,null}` in the run's config: 1337 typed is no change."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        saved, run = composed(*TINY)
        choices = dict(run.hydra.runtime.choices)
        _, command = composed("resume=x", "data.seed=1337")
        resumed, _ = resumed_config("x", command, "train", saved, choices)
    assert resumed.data.seed == 1337


@pytest.mark.parametrize(
    ("typed", "refused"),
    [
        (
            ["model.config.n_embd=64", "data.source.path=/elsewhere", "trainer.max_steps=9"],
            "model.config.n_embd=64, data.source.path=/elsewhere would change model.config, "
            "data.source: drop them",
        ),
        (["seed=7"], "seed=7 would change seed: drop it"),
        (["model=llama_tiny"], "model=llama_tiny would change model.model_type, model.config"),
        (["data.tokenizer.kind=char"], "data.tokenizer.kind=char would change data.tokenizer"),
        (["experiment=shakespeare_char"], "experiment=shakespeare_char sets keys across it"),
    ],
)
def test_resumed_config_refuses_a_change_of_model_shape_or_data(
    typed: list[str], refused: str
) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        saved, run = composed(*TINY, "data=text_files", "data.source.path=/corpus")
        _, command = composed("data=text_files", "resume=x", *typed)
        with pytest.raises(LMTrainError) as refusal:
            resumed_config("x", command, "train", saved, dict(run.hydra.runtime.choices))
    assert refused in str(refusal.value)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("resume=", "resume='' is empty: pass resume=<run folder> or latest, or leave it out"),
        ("ckpt_path=", "ckpt_path='' is empty: pass ckpt_path=<.ckpt> or last, or leave it out"),
        # A traceback from the entry point's first read of `resume`.
        ("resume=${oops}", "resume cannot be resolved (Interpolation key 'oops' not found)"),
    ],
)
def test_an_empty_resume_or_ckpt_path_is_refused_not_read_as_a_new_run(
    tmp_path: Path, data_dir: Path, override: str, fragment: str
) -> None:
    # `resume=$RUN` with the shell variable unset trained a new run from scratch.
    result = run_cli("train", *tiny_cli(tmp_path, data_dir), override)
    assert_one_line_error(result, fragment)
    assert not list((tmp_path / "logs").rglob("*.ckpt"))
    if override.endswith("="):  # refused before Hydra made a run folder for nothing
        assert not list((tmp_path / "logs").rglob("train.log"))


def test_resume_of_a_folder_inside_a_run_names_the_run_folder(
    tmp_path: Path, killed_run: Path
) -> None:
    # It said "<run>/checkpoints has no checkpoint in checkpoints/", and not where the run is.
    run_dir = copy_run(killed_run, tmp_path / "run")
    before = files_of(run_dir)
    result = run_cli("train", f"resume={run_dir / 'checkpoints'}")
    assert_one_line_error(result, f"is inside a run folder: pass the run folder, resume={run_dir}")
    assert files_of(run_dir) == before
