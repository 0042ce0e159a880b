"""`trainer=fsdp_cpu` killed with SIGKILL in training and in a checkpoint save, then resumed with
`ckpt_path=last`, ends bitwise as an uninterrupted run does.

The run is `RESUMABLE_RUN` of tests/helpers/killed_runs.py (everything that makes resuming hard)
on two gloo ranks; tests/helpers/sharded_runs.py stalls it at the moments the test kills it.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lmtrain.utils.safe_load import check_dcp_folder, read_dcp_folder_metadata
from tests.helpers.killed_runs import (
    RESUMABLE_RUN,
    csv_history,
    finish,
    kill,
    resumable_corpus,
    start,
)


def exact_resume_state(folder: Path) -> dict[str, Any]:
    """ExactResume's state in the sharded checkpoint `folder`."""
    meta = torch.load(folder / "meta.pt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in meta["callbacks"].items() if "ExactResume" in k]
    return state


@pytest.mark.slow
def test_fsdp_run_killed_in_training_and_in_a_save_ends_as_an_uninterrupted_one(
    tmp_path: Path, data_dir: Path
) -> None:
    """RESUMABLE_RUN cut to 30 steps (dropout, 2 micro-batches per step and rank, validations
    and checkpoints between and within steps) under FSDP on two ranks. Killed with SIGKILL just
    after a save that fell between the micro-batches of a step, resumed; killed again in a save,
    once every rank's shards are written and before the folder is renamed into place; resumed
    to the end. The metrics and weights are bitwise the uninterrupted run's."""
    corpus = resumable_corpus(tmp_path / "corpus")
    fsdp = ["trainer=fsdp_cpu", "global_batch_size=16", "trainer.max_steps=30"]

    def command(run_dir: Path, *extra: str) -> list[str]:
        probe = [
            "+callbacks.probe._target_=tests.helpers.sharded_runs.Probe",
            f"+callbacks.probe.path={run_dir / 'probe.pt'}",
        ]
        data = [f"data.source.path={corpus}", f"paths.data_dir={data_dir}"]
        return [
            sys.executable,
            "-m",
            "lmtrain.train",
            *RESUMABLE_RUN,
            *data,
            *fsdp,
            *probe,
            *extra,
            f"hydra.run.dir={run_dir}",
        ]

    reference, run_dir, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    uninterrupted = start(command(reference), tmp_path / "reference.out")
    last = run_dir / "checkpoints" / "last.ckpt"

    # 1. Killed in training, right after a checkpoint written between two micro-batches.
    stalled = tmp_path / "stalled"
    stall = [
        "+callbacks.stall._target_=tests.helpers.sharded_runs.StallAfterMidStepSave",
        f"+callbacks.stall.marker={stalled}",
    ]
    proc = start(command(run_dir, *stall), log)
    while proc.poll() is None and not stalled.exists():
        time.sleep(0.02)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]
    state = exact_resume_state(last)
    assert len(state["rng_states"]) == 2
    (grads,) = state["grads"]  # one gradient for both ranks (FSDP averages every micro-batch)
    entries = read_dcp_folder_metadata(last).state_dict_metadata
    for name, grad in grads.items():  # whole tensors, joined from both ranks' shards
        assert grad.shape == entries[f"state_dict.{name}"].size, name

    # 2. Killed in a save of last.ckpt: every shard is written, the rename is not done.
    marker = tmp_path / "paused"
    pausing = [
        "trainer.strategy._target_=tests.helpers.sharded_runs.PausingFSDP2",
        f"+trainer.strategy.marker={marker}",
        "+trainer.strategy.pause_at=2",
    ]
    proc = start([*command(run_dir, *pausing), "ckpt_path=last"], log)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, log.read_text()[-3000:]
    tmp = Path(marker.read_text())
    kill(proc)
    assert tmp == last.with_name(".last.ckpt.tmp") and (tmp / "meta.pt").is_file()
    written = torch.load(tmp / "meta.pt", weights_only=True)["global_step"]
    previous = torch.load(last / "meta.pt", weights_only=True)["global_step"]
    assert 0 < previous < written  # the previous checkpoint, whole, is still last.ckpt
    check_dcp_folder(last)

    # 3. Resumed to the end.
    finish([*command(run_dir), "ckpt_path=last"], log)
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "reference.out").read_text()[-3000:]
    assert not list(last.parent.glob(".*"))  # the killed save's folder is cleaned up
    assert_same_run_folder(run_dir, reference)


def assert_same_run_folder(run_dir: Path, reference: Path) -> None:
    """metrics.json and metrics.csv (but wall-clock figures) and the final weights, bitwise."""
    ignored = ("time/", "/device/", "tok/s")

    def state(folder: Path) -> tuple[dict[str, float], dict[str, torch.Tensor], int]:
        metrics = json.loads((folder / "metrics.json").read_text())
        probe = torch.load(folder / "probe.pt", weights_only=True)
        kept = {k: v for k, v in metrics.items() if not any(part in k for part in ignored)}
        return kept, probe["weights"], probe["step"]

    metrics, weights, step = state(run_dir)
    ref_metrics, ref_weights, ref_step = state(reference)
    assert step == ref_step and metrics == ref_metrics
    differ = [k for k in ref_weights if not torch.equal(weights[k], ref_weights[k])]
    assert not differ, f"weights differ from the uninterrupted run: {differ}"
    assert csv_history(run_dir) == csv_history(reference)  # the CSV logger's rows, all kept
    # The same checkpoints, ranked alike: a resume once took every sharded best folder for a
    # missing file and forgot it, so none was ever replaced and a worse one became the best.
    assert checkpoints(run_dir) == checkpoints(reference)


def checkpoints(run_dir: Path) -> tuple[list[str], str, list[str]]:
    """The names in checkpoints/, and the best and top-k names that last.ckpt's checkpoint
    callback holds."""
    folder = run_dir / "checkpoints"
    meta = torch.load(folder / "last.ckpt" / "meta.pt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in meta["callbacks"].items() if "best_k_models" in v]
    return (
        sorted(p.name for p in folder.iterdir()),
        Path(state["best_model_path"]).name,
        sorted(Path(p).name for p in state["best_k_models"]),
    )
