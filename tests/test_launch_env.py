"""A launcher's variables that Lightning would trip over are refused before the run starts, and
processes that cannot meet end in one line naming the address and port (red team: each waited
out the rendezvous timeout, then ended in torch's traceback under Hydra's "Error executing job").
Every refusal before the start leaves no run folder."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

WAIT_LONGER = (
    "trainer.strategy.timeout.seconds=<s> under trainer=ddp_cpu, trainer.strategy.timeout_s=<s> "
    "under trainer=fsdp"
)
SLURM_MISSING = (
    "are not set (srun sets them in each task it starts): start the command with srun "
    "(--ntasks-per-node=<trainer.devices>); outside a SLURM job, unset the SLURM_* variables; in "
    "an interactive allocation, set SLURM_JOB_NAME=interactive and Lightning starts the "
    "processes itself"
)
# One srun task of a job of 2 tasks on one node, as srun sets it.
SRUN_TASK = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost",
    "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process's socket listens on, as an earlier run's store would."""
    with socket.socket() as listener:
        listener.bind(("", 0))
        listener.listen()
        yield listener.getsockname()[1]


def train(
    tmp_path: Path, data_dir: Path, env: dict[str, str], *overrides: str
) -> subprocess.CompletedProcess[str]:
    """`python -m lmtrain.train` of a tiny trainer=ddp_cpu run into tmp_path/run under `env`,
    its processes waiting 3 s for each other."""
    overrides = (
        "trainer=ddp_cpu",
        "trainer.strategy.timeout.seconds=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    )
    return run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides), env=env, timeout=120)


def refused_before_start(
    tmp_path: Path, data_dir: Path, env: dict[str, str], *overrides: str
) -> str:
    """The one error line of a run refused before it started: exit 1, no run folder."""
    out = train(tmp_path, data_dir, env, *overrides)
    line = assert_one_line_error(out)
    assert out.returncode == 1, out.stderr[-2000:]
    assert not (tmp_path / "run").exists()
    return line


def test_a_node_rank_past_trainer_num_nodes_is_refused(tmp_path: Path, data_dir: Path) -> None:
    env = {"NODE_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    assert refused_before_start(tmp_path, data_dir, env) == (
        "error: NODE_RANK=1 but trainer.num_nodes=1: node ranks run from 0 to 0: pass "
        "trainer.num_nodes=<the number of nodes> on every node, or unset NODE_RANK on one machine"
    )


def test_a_local_rank_that_no_launcher_set_is_refused(tmp_path: Path, data_dir: Path) -> None:
    assert refused_before_start(tmp_path, data_dir, {"LOCAL_RANK": "1"}) == (
        "error: LOCAL_RANK=1 is set, but no launcher started this process (torchrun, or "
        "Lightning's own, which sets it with MASTER_PORT): Lightning would start no other process "
        "and wait for them: unset LOCAL_RANK (Lightning starts trainer.devices processes itself), "
        "or start the command with torchrun"
    )


def test_a_master_addr_that_does_not_resolve_is_refused(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(socket.gaierror) as lookup:
        socket.getaddrinfo("nohost.invalid", None)  # .invalid: never a host (RFC 2606)
    line = refused_before_start(tmp_path, data_dir, {"MASTER_ADDR": "nohost.invalid"})
    assert line == (
        "error: MASTER_ADDR='nohost.invalid' is not an address this machine can resolve "
        f"({lookup.value.strerror}): set it to node 0's host name or IP address (the same on "
        "every node), or unset it on one machine"
    )


def test_a_master_port_another_process_holds_is_refused(
    tmp_path: Path, data_dir: Path, taken_port: int
) -> None:
    line = refused_before_start(tmp_path, data_dir, {"MASTER_PORT": str(taken_port)})
    assert line == (
        f"error: MASTER_PORT={taken_port} cannot be listened on here (EADDRINUSE: "
        f"{os.strerror(errno.EADDRINUSE)}): free it (another process, an earlier run's perhaps, "
        "listens on it), set MASTER_PORT to a free port (the same on every node), or unset "
        "MASTER_PORT to let Lightning pick one"
    )


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("MASTER_PORT", "abc", "from 1 to 65535: set it to a free port (the same on every node), "
         "or unset it"),
        ("MASTER_PORT", "70000", "from 1 to 65535: set it to a free port (the same on every "
         "node), or unset it"),
        ("NODE_RANK", "-1", "of 0 or more: set it to this node's rank (0 to trainer.num_nodes - "
         "1), or unset it on one machine"),
        ("WORLD_SIZE", "two", "of 1 or more: unset it: torchrun sets it in each process it "
         "starts"),
    ],
    ids=["MASTER_PORT=abc", "MASTER_PORT=70000", "NODE_RANK=-1", "WORLD_SIZE=two"],
)  # fmt: skip
def test_a_launcher_number_that_is_not_one_is_refused(
    tmp_path: Path, data_dir: Path, name: str, value: str, said: str
) -> None:
    line = refused_before_start(tmp_path, data_dir, {name: value})
    assert line == f"error: {name}={value!r} is not a whole number {said}"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"SLURM_NTASKS": "2", "SLURM_JOB_ID": "1"},
         "SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_NTASKS_PER_NODE"),
        ({"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_ID": "1",
          "SLURM_JOB_NAME": "train"}, "SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID"),
    ],
    ids=["ntasks", "ntasks-per-node"],
)  # fmt: skip
def test_slurm_variables_without_srun_are_refused(
    tmp_path: Path, data_dir: Path, env: dict[str, str], missing: str
) -> None:
    """Lightning took them for a SLURM job: its RuntimeError under Hydra's "Error executing
    job", or a KeyError blamed on the trainer's settings."""
    assert refused_before_start(tmp_path, data_dir, env) == (
        f"error: SLURM_NTASKS=2 makes this a SLURM job to Lightning, but {missing} {SLURM_MISSING}"
    )


def test_a_slurm_job_of_ntasks_alone_is_refused(tmp_path: Path, data_dir: Path) -> None:
    env = {k: v for k, v in SRUN_TASK.items() if k != "SLURM_NTASKS_PER_NODE"}
    assert refused_before_start(tmp_path, data_dir, env) == (
        "error: SLURM_NTASKS=2 is set but not SLURM_NTASKS_PER_NODE, which Lightning needs: "
        "submit the job with --ntasks-per-node=<trainer.devices> and --nodes=<trainer.num_nodes> "
        "instead of --ntasks=2"
    )


def test_a_node_that_cannot_reach_rank_zero_ends_in_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """Node 1 of 2, node 0 never started: torch's DistNetworkError after the timeout."""
    port = free_port()
    env = {"NODE_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    out = train(tmp_path, data_dir, env, "trainer.devices=1", "trainer.num_nodes=2")
    assert out.returncode == 1, out.stderr[-2000:]
    assert assert_one_line_error(out) == (
        f"error: could not reach rank 0 of the run at MASTER_ADDR=127.0.0.1 MASTER_PORT={port} "
        "(The client socket has timed out after 3000ms while trying to connect to (127.0.0.1, "
        f"{port})): start node 0 with the same MASTER_ADDR and MASTER_PORT, set MASTER_ADDR to "
        f"node 0's address as this node reaches it, or wait longer: {WAIT_LONGER}"
    )


def test_a_slurm_rank_zero_whose_port_is_taken_ends_in_one_line(
    tmp_path: Path, data_dir: Path, taken_port: int
) -> None:
    """srun's rank 0 listens on MASTER_PORT: torch's DistNetworkError (EADDRINUSE) at once."""
    out = train(tmp_path, data_dir, {**SRUN_TASK, "MASTER_PORT": str(taken_port)})
    assert out.returncode == 1, out.stderr[-2000:]
    assert assert_one_line_error(out) == (
        f"error: MASTER_PORT={taken_port} cannot be listened on here (EADDRINUSE: address "
        "already in use): free it (another process, an earlier run's perhaps, listens on it), "
        "set MASTER_PORT to a free port (the same on every node), or unset MASTER_PORT to let "
        "Lightning pick one"
    )


LAUNCHED = {
    "torchrun": {
        "TORCHELASTIC_RUN_ID": "run", "LOCAL_RANK": "1", "RANK": "1", "GROUP_RANK": "0",
        "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
    },
    "lightning": {
        "LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
    },
    "by hand": {"LOCAL_RANK": "1"},  # MASTER_PORT: the test's
    "srun": SRUN_TASK,
    "interactive": {"SLURM_NTASKS": "2", "SLURM_JOB_ID": "1", "SLURM_JOB_NAME": "interactive"},
    # torchrun in an sbatch script (--ntasks alone): Lightning takes torchrun's ranks, not SLURM's.
    "torchrun in sbatch": {
        "TORCHELASTIC_RUN_ID": "run", "LOCAL_RANK": "1", "RANK": "1", "GROUP_RANK": "0",
        "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
        "SLURM_NTASKS": "4", "SLURM_JOB_ID": "1", "SLURM_JOB_NAME": "train",
    },
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(LAUNCHED))
def test_what_launchers_set_is_not_refused(
    monkeypatch: pytest.MonkeyPatch, taken_port: int, launcher: str
) -> None:
    """torchrun's and Lightning's ranks > 0 (whose rank 0 listens on MASTER_PORT already), each
    process started by hand with LOCAL_RANK and MASTER_PORT, an srun task, and an interactive
    allocation (Lightning starts the processes itself)."""
    from lmtrain.utils.launch_env import launch_problem  # lmtrain.utils.launch reads it

    for name in list(os.environ):
        if name.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) or name.endswith("RANK"):
            monkeypatch.delenv(name)
    started = "LOCAL_RANK" in LAUNCHED[launcher]  # not rank 0, which listens on the port
    port = taken_port if started else free_port()
    for name, value in {**LAUNCHED[launcher], "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    trainer = {"num_nodes": 1, "devices": 2}
    assert launch_problem(OmegaConf.create({"trainer": trainer})) is None


def test_a_single_process_run_ignores_the_variables_it_never_reads(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    """One process meets no one: a stale MASTER_ADDR, a MASTER_PORT another job holds and a
    container's LOCAL_RANK=0 were refused as if it waited for other ranks."""
    from lmtrain.utils.launch_env import launch_problem

    for name in list(os.environ):
        if name.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) or name.endswith("RANK"):
            monkeypatch.delenv(name)
    stale = {"MASTER_ADDR": "nohost.invalid", "MASTER_PORT": str(taken_port), "LOCAL_RANK": "0"}
    for name, value in stale.items():
        monkeypatch.setenv(name, value)
    one = OmegaConf.create({"trainer": {"num_nodes": 1, "devices": 1}})
    assert launch_problem(one) is None
    two = OmegaConf.create({"trainer": {"num_nodes": 1, "devices": 2}})
    assert "MASTER_ADDR='nohost.invalid'" in str(launch_problem(two))  # two processes meet
