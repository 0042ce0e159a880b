"""A run killed with SIGKILL and resumed keeps every row of its W&B `samples` table (red team
log31, finding 1).

W&B carries an incremental table's earlier increments into a resumed run only through the
server's run summary, which an offline resume lacks: the resumed session's table started again
at increment 0, and the rows logged before the kill were gone (6 rows where an uninterrupted
run has 8). The run is paused in the save of last.ckpt that follows step 4's validation (its
samples logged; last.ckpt still of step 2), killed, resumed with `ckpt_path=last`, and the
table it logged last is read back from the offline run's files with W&B's own reader: it must
hold the rows of an uninterrupted run, step 2's from before the kill, and step 4's once (re-made
by the resumed run, not kept from the killed one).

The runs are new interpreters (`fresh`): a fork of the warm test server finds wandb's media
folder (`wandb.sdk.data_types.base_types.media.MEDIA_TMP`, made as wandb is imported) removed by
the first fork that ended, and logs no table at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lmtrain.callbacks.sample_rows import block_text, rows_up_to
from tests.helpers import ROOT
from tests.helpers.cli import inspect_session, run_cli, tiny_cli
from tests.helpers.killed_runs import kill
from tests.helpers.samples import PROMPTS, blocks

RUN = ("logger=wandb", PROMPTS, "trainer.max_steps=8", "trainer.limit_val_batches=1")
SAVED_AT = 2  # the step of last.ckpt when the run is killed (saved after each validation)


def killed_in_second_save(cli: list[str], marker: Path, log: Path) -> None:
    """`python -m lmtrain.train` (W&B offline) paused in its 2nd save of last.ckpt (after step
    4's validation), then SIGKILLed a little over W&B's 1 s between writes later (the rows
    logged before the pause are in its file)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    pausing = f"{{_target_:tests.helpers.faults.PausingCheckpointIO,marker:'{marker}',pause_at:2}}"
    command = [sys.executable, "-m", "lmtrain.train", *cli, f"trainer.plugins=[{pausing}]"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    time.sleep(2.0)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]


def last_table(session: Path) -> list[list]:
    """The rows of the `samples` table the offline W&B session logged last, read back from its
    increments: every increment it points to must be one this session logged."""
    records = [json.loads(line) for line in inspect_session(session).splitlines()]
    logged = [
        r["history"]["item"]
        for r in records
        if r.get("type") == "history" and "samples._type" in r["history"]["item"]
    ]
    assert logged, "the session logged no samples table"
    last = logged[-1]
    # The chain of the last table: its earlier increments and its own, all of this session.
    assert last["samples.increment_num"] == len(logged) - 1
    assert len(last["samples.previous_increments_paths"]) == len(logged) - 1
    rows: list[list] = []
    for item in logged:
        rows += json.loads((session / "files" / item["samples.path"]).read_text())["data"]
    assert last["samples.nrows"] == len(rows)
    return rows


def file_rows(run: Path) -> list[list]:
    """samples.txt as table rows (step, prompt, the sample's text, prompt included)."""
    prompts = ("The cat", "A dog")
    return [
        [step, next(p for p in prompts if sample.startswith(p)), sample]
        for step, samples in blocks(run / "samples.txt")
        for sample in samples
    ]


def as_text(rows: list[list]) -> list[list]:
    return [[step, prompt, (prompt + completion).rstrip("\n")] for step, prompt, completion in rows]


def test_a_killed_and_resumed_run_logs_every_sample_row_to_wandb(
    tmp_path: Path, data_dir: Path
) -> None:
    run, reference = tmp_path / "run", tmp_path / "reference"
    cli = tiny_cli(tmp_path, data_dir, *RUN)
    done = run_cli("train", *cli, f"hydra.run.dir={reference}", fresh=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (whole,) = sorted((reference / "wandb").glob("offline-run-*"))
    uninterrupted = last_table(whole)
    assert [row[0] for row in uninterrupted] == [2, 2, 4, 4, 6, 6, 8, 8]

    killed_in_second_save(
        [*cli, f"hydra.run.dir={run}"], tmp_path / "paused", tmp_path / "killed.out"
    )
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == SAVED_AT
    (killed,) = sorted((run / "wandb").glob("offline-run-*"))
    assert [row[0] for row in last_table(killed)] == [2, 2, 4, 4]  # step 4's: after last.ckpt

    resumed = run_cli("train", *cli, f"hydra.run.dir={run}", "ckpt_path=last", fresh=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    killed, again = sorted((run / "wandb").glob("offline-run-*"))
    table = last_table(again)
    assert [row[:2] for row in table] == [row[:2] for row in uninterrupted]
    assert as_text(table) == file_rows(run)  # step 2's rows as the killed session wrote them


def test_samples_file_rows_read_back_as_written() -> None:
    """The rows read back are the rows written, up to the resumed step: a completion may end
    with newlines or hold a separator of its own; a block of other prompts (changed for the
    resume) keeps its text, with the prompt it starts with where one matches."""
    prompts = ["The cat", "A dog"]
    first = [[2, "The cat", " sat\n\n---\n\nA doe\n"], [2, "A dog", " ran\n"]]
    second = [[4, "The cat", " slept"], [4, "A dog", ""]]
    text = block_text(2, first) + block_text(4, second) + block_text(6, second)
    assert rows_up_to(text, 4, prompts) == first + second
    assert rows_up_to(text, 3, prompts) == first
    older = block_text(2, [[2, "The cat", " x"], [2, "Once", " y"]])
    assert rows_up_to(older, 2, prompts) == [[2, "The cat", " x"], [2, "", "Once y"]]
