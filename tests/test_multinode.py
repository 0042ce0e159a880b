"""Two nodes with one process each, simulated on this machine: two commands that meet over a
localhost rendezvous, as they would on two hosts sharing a file system.

Both launch paths a cluster without SLURM uses: Lightning's own launcher (NODE_RANK,
MASTER_ADDR, MASTER_PORT, `trainer.num_nodes=2`) and torchrun (`--nnodes=2`). Either way the
run has one run folder, one metrics.json and one W&B run id, and nodes whose token caches
differ stop at setup with one line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain.utils.launch import RANK_VARIABLES, refuse_nodes_no_one_starts
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(
    launch: str, overrides: list[list[str]], log_dir: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Start node 0 and node 1 at once (their own overrides each), wait for both."""
    port = free_port()
    procs = []
    for node, node_overrides in enumerate(overrides):
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        if launch == "lightning":
            env |= {"NODE_RANK": str(node), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            command = [sys.executable, "-m", "lmtrain.train"]
        else:
            torchrun = Path(sys.executable).with_name("torchrun")
            command = [str(torchrun), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}"]
            command += ["--master_addr=127.0.0.1", f"--master_port={port}", "-m", "lmtrain.train"]
        out = (log_dir / f"node{node}.out").open("w")
        procs.append(
            subprocess.Popen(
                [*command, *node_overrides],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    for node, proc in enumerate(procs):
        proc.wait(timeout=TIMEOUT_S)
        output = (log_dir / f"node{node}.out").read_text()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, output, output))
    return results


def node_overrides(tmp_path: Path, node: int, run: Path, *extra: str) -> list[str]:
    """Each node its own token cache (node-local data_dir), one shared run folder."""
    return tiny_cli(
        tmp_path,
        tmp_path / f"data{node}",
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "logger=wandb",
        f"hydra.run.dir={run}",
        *extra,
        corpus=tmp_path / "corpus" / "corpus.txt",
    )


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["lightning", "torchrun"])
def test_two_nodes_make_one_run(tmp_path: Path, launch: str) -> None:
    one_file_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    results = two_nodes(launch, [node_overrides(tmp_path, n, run) for n in (0, 1)], tmp_path)
    for node, result in enumerate(results):
        assert result.returncode == 0, f"node {node}: {result.stdout[-3000:]}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4
    assert metrics["tokens_seen"] == 4 * 2 * 8 * 32  # steps x ranks x batch x block
    assert list(tmp_path.glob("logs/train/runs/*")) == []  # no second run folder anywhere
    run_id = (run / "wandb_run_id").read_text().strip()
    assert [p.name.endswith(run_id) for p in (run / "wandb").glob("offline-run-*")] == [True]


@pytest.mark.slow
def test_nodes_whose_token_caches_differ_stop_with_one_line(tmp_path: Path) -> None:
    one_file_corpus(tmp_path / "corpus")
    other = tmp_path / "other" / "corpus.txt"
    other.parent.mkdir()
    # The same text plus one character: another vocabulary, other tokens.
    other.write_text((tmp_path / "corpus" / "corpus.txt").read_text() + "\n§\n")
    run = tmp_path / "run"
    node1 = node_overrides(tmp_path, 1, run, f"data.source.path={other}")
    results = two_nodes("lightning", [node_overrides(tmp_path, 0, run), node1], tmp_path)
    assert all(r.returncode != 0 for r in results), [r.stdout[-2000:] for r in results]
    errors = [line for r in results for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the token cache differs between ranks: ranks [1]" in errors[0]
    assert "Traceback" not in results[0].stdout, results[0].stdout[-3000:]
    assert not (run / "checkpoints").exists()


def test_several_nodes_without_a_named_run_folder_are_refused(tmp_path: Path) -> None:
    env = {"NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    overrides = tiny_cli(tmp_path, tmp_path / "data", "trainer=ddp_cpu", "trainer.num_nodes=2")
    result = run_cli("train", *overrides, env=env)
    assert_one_line_error(result, "pass hydra.run.dir=<a folder on storage every node shares>")


@pytest.mark.parametrize("variable", [None, "NODE_RANK", "MASTER_ADDR", "SLURM_PROCID"])
def test_several_nodes_need_something_that_starts_them(
    monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    """num_nodes > 1 with nothing to start the other nodes is refused; a node started by hand
    (NODE_RANK, or node 0 with only MASTER_ADDR, which Lightning takes as NODE_RANK=0) is not."""
    for name in (*RANK_VARIABLES, "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    if variable is not None:
        monkeypatch.setenv(variable, "0" if variable != "MASTER_ADDR" else "10.0.0.1")
    cfg = OmegaConf.create({"trainer": {"num_nodes": 2}})
    if variable is None:
        with pytest.raises(SystemExit):
            refuse_nodes_no_one_starts(cfg)
    else:
        refuse_nodes_no_one_starts(cfg)


def test_a_rank_that_never_starts_fails_the_run_in_one_line_after_the_timeout(
    tmp_path: Path,
) -> None:
    """SLURM said 4 tasks on 2 nodes and one started: it waited torch's half hour in silence,
    then printed a traceback."""
    env = {
        "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "4",
        "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODELIST": "localhost,node2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0", "MASTER_PORT": str(free_port()),
    }  # fmt: skip
    overrides = tiny_cli(
        tmp_path, tmp_path / "data", "trainer=ddp_cpu", "trainer.num_nodes=2",
        "trainer.strategy.timeout.seconds=3", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    result = run_cli("train", *overrides, env=env, timeout=120)
    assert_one_line_error(result, "did not all start", "1/4 clients joined", "strategy.timeout")
