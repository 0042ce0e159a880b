"""Under torchrun (and Lightning's launcher across nodes) every process is a Hydra run of its own,
yet the run has one folder and one record of its config (red team, dist29):

- a run folder named by the time each process starts (`${now:...}`) gave each rank a folder of
  its own; it is refused in one line naming the launcher, as under SLURM;
- in a new folder, rank 1 wrote `.hydra/` before rank 0, which then kept a byte-identical copy
  in `.hydra/previous/<time>/` as if the run had been resumed: only rank 0 writes `.hydra/` now,
  as under Lightning's own DDP launcher (`hydra.output_subdir=null` for its ranks > 0).

The torchrun runs are real: two CPU processes over gloo.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import command_environment, run_cli, tiny_cli

TIME_NAMED = "${now:%H-%M-%S_%f}"


def torchrun_train(*overrides: str) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc_per_node=2 -m lmtrain.train trainer=ddp_cpu <overrides>`."""
    with socket.socket() as s:  # a free port: other tests may run torchrun at the same time
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node=2", f"--master_port={port}", "-m"]
    command += ["lmtrain.train", *overrides, "trainer=ddp_cpu"]
    env = {**command_environment(os.environ), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_into_a_new_folder_records_no_previous_run(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    result = torchrun_train(*cli, "callbacks.text_samples=null", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "metrics.json").is_file()
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]  # no previous/: nothing was replaced


def test_torchrun_into_a_folder_named_by_the_time_is_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    runs = tmp_path / "runs"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    result = torchrun_train(*cli, f"hydra.run.dir={runs}/{TIME_NAMED}")
    assert result.returncode != 0  # (torchrun's own ChildFailedError traceback follows)
    errors = {line for line in result.stderr.splitlines() if line.startswith("error: ")}
    assert errors == {
        f"error: torchrun (WORLD_SIZE=2) with hydra.run.dir={runs}/{TIME_NAMED}, a folder named "
        "by the time each process starts: each rank would make its own folder: pass "
        f"hydra.run.dir={tmp_path / 'logs'}/train/runs/<run name> (the same for every rank and "
        "node)"
    }, result.stderr[-3000:]
    assert not runs.exists()  # refused before Hydra made a folder


def test_several_nodes_into_a_folder_named_by_the_time_are_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    """Lightning's launcher, node 0 of two: refused before it starts its own processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env = {"NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(s.getsockname()[1])}
    runs = tmp_path / "runs"
    cli = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.num_nodes=2")
    result = run_cli("train", *cli, f"hydra.run.dir={runs}/{TIME_NAMED}", env=env)
    assert_one_line_error(
        result,
        "Lightning's launcher on several nodes (NODE_RANK set, trainer.num_nodes=2) with "
        f"hydra.run.dir={runs}/{TIME_NAMED}, a folder named by the time each process starts: "
        "each node would make its own folder: pass hydra.run.dir=<a folder on storage every node "
        "shares>",
    )
    assert not runs.exists()
