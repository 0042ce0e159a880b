"""LoRA runs as users start them, in processes: a bad target module refused in one line by the
CLI, two processes under DDP (and a refusal under FSDP), and a LoRA run killed with SIGKILL that
resumes bitwise where an uninterrupted one ends. The in-process LoRA tests are in test_lora.py."""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from lmtrain.utils.safe_load import load_torch_file
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_RUN
from tests.helpers.killed_runs import FINAL_WEIGHTS, final_state, finish, kill, start


def test_target_module_matching_nothing_is_one_line_from_the_cli(
    base: Path, new_text: Path, data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "train",
        "experiment=finetune_lora",
        f"model.pretrained={base}",
        f"data.source.path={new_text}",
        "model.peft.target_modules=[c_attn,q_proj]",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
    )
    assert_one_line_error(
        result, "'q_proj' matches no layer of this gpt2 model", "c_attn, c_proj, c_fc"
    )


@pytest.mark.slow
def test_lora_trains_under_ddp_and_is_refused_under_fsdp(
    base: Path, new_text: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Two CPU processes (gloo): rank 1 builds the base on the meta device and adds the adapters
    after reading the weights; the checkpoint holds the adapters alone, as with one process."""
    run = [
        "experiment=finetune_lora",
        f"model.pretrained={base}",
        f"data.source.path={new_text}",
        *TINY_RUN,
        "callbacks.text_samples=null",
        "logger=none",
        f"paths.data_dir={data_dir}",
    ]
    result = run_cli("train", *run, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_torch_file(tmp_path / "ddp" / "checkpoints" / "last.ckpt")["state_dict"]
    assert len(state) == 2 * 4 * 2 and all("lora_" in k for k in state)  # A and B, 4 a block

    result = run_cli("train", *run, "trainer=fsdp_cpu", f"hydra.run.dir={tmp_path / 'fsdp'}")
    assert_one_line_error(result, "LoRA (model/peft=lora) does not run under trainer=fsdp")


@pytest.mark.slow
def test_lora_run_killed_and_resumed_ends_as_an_uninterrupted_one(
    base: Path, new_text: Path, data_dir: Path, tmp_path: Path
) -> None:
    """kill -9 after a checkpoint, then ckpt_path=last: bitwise the uninterrupted run (adapter
    dropout and the base's own dropout draw from the RNG, 2 micro-batches a step)."""

    def command(run_dir: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "lmtrain.train",
            "experiment=finetune_lora",
            f"model.pretrained={base}",
            f"data.source.path={new_text}",
            *TINY_RUN,
            "data.batch_size=4",
            "global_batch_size=8",
            "model.peft.dropout=0.1",
            "trainer.max_steps=24",
            "trainer.val_check_interval=10",
            "callbacks.model_checkpoint.every_n_train_steps=3",
            "logger=none",
            f"paths.data_dir={data_dir}",
            FINAL_WEIGHTS,
            f"+callbacks.final_weights.path={run_dir / 'final_weights.pt'}",
            f"hydra.run.dir={run_dir}",
        ]

    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    finish(command(reference), tmp_path / "reference.out")
    last = run_dir / "checkpoints" / "last.ckpt"
    # From step 3 on, each step takes 0.1 s longer (a sleep, no change to the numbers): the 21
    # steps left outlast the random delay, so the kill always lands mid-run.
    pace = [
        "+callbacks.pace._target_=tests.helpers.faults.Pace",
        f"+callbacks.pace.dirpath={tmp_path / 'pids'}",
        "+callbacks.pace.after_step=3",
        "+callbacks.pace.seconds=0.1",
    ]
    proc = start([*command(run_dir), *pace], tmp_path / "run.out")
    while not last.exists() and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(random.uniform(0, 0.5))
    assert kill(proc) == -signal.SIGKILL, (tmp_path / "run.out").read_text()[-3000:]
    step = load_torch_file(last)["global_step"]
    assert 0 < step < 24
    finish([*command(run_dir), "ckpt_path=last"], tmp_path / "run.out")
    metrics, weights, final_step = final_state(run_dir)
    ref_metrics, ref_weights, ref_step = final_state(reference)
    assert final_step == ref_step == 24 and metrics == ref_metrics
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights), "weights differ"
