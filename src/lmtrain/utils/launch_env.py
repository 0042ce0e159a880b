"""The variables a launcher gives a training process, checked before anything starts, and torch's
rendezvous failures as one line.

Lightning reads MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK, WORLD_SIZE and srun's SLURM_*
variables where it meets them: a bad one was a traceback (`int('abc')`, a KeyError that blamed
the trainer's settings), or a wait of the whole rendezvous timeout for a process that could never
come, then torch's traceback (red team). `launch_problem` says what is wrong in one line before
the run folder is made (`launch.refuse_nodes_no_one_starts`, which ClaimRunFolder calls first);
`rendezvous_failure` turns what torch raises when the processes cannot meet into one line that
names the address and port they met at.
"""

from __future__ import annotations

import errno
import os
import re
import socket

from lightning.fabric.plugins.environments import (
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError, find_cause
from lmtrain.utils.slurm_run_folder import slurm_run_folder_problem

# Launchers that start every node's processes themselves (each sets their ranks).
CLUSTERS_THAT_START_NODES = (
    TorchElasticEnvironment,
    SLURMEnvironment,
    LSFEnvironment,
    MPIEnvironment,
)
RANK_TODO = "set it to this node's rank (0 to trainer.num_nodes - 1), or unset it on one machine"
# The whole numbers a launcher passes: the least value of each, and what to do with a bad one.
NUMBERS = {
    "MASTER_PORT": (1, "set it to a free port (the same on every node), or unset it"),
    "NODE_RANK": (0, RANK_TODO),
    "GROUP_RANK": (0, RANK_TODO),
    "LOCAL_RANK": (0, "unset it: torchrun and Lightning's launcher set it in each process"),
    "WORLD_SIZE": (1, "unset it: torchrun sets it in each process it starts"),
    "SLURM_RESTART_COUNT": (0, "unset it: SLURM sets it when it requeues a job"),
}
HIGHEST_PORT = 65535
EMPTY_IS_UNSET = ("SLURM_RESTART_COUNT",)  # lmtrain reads "" as 0 (utils.requeue)
SRUN_TODO = "start the command with srun, or unset the SLURM_* variables outside a SLURM job"
# What Lightning reads in a SLURM job (SLURMEnvironment): srun sets them in each task.
SLURM_NUMBERS = {
    "SLURM_NTASKS": 1,
    "SLURM_NTASKS_PER_NODE": 1,
    "SLURM_NNODES": 1,
    "SLURM_PROCID": 0,
    "SLURM_LOCALID": 0,
    "SLURM_NODEID": 0,
    "SLURM_JOB_ID": 0,
}
SRUN_TASK_VARIABLES = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID")
# What getaddrinfo says of a name that no host has (not EAI_AGAIN, a lookup that failed for now).
NOT_A_HOST = (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
WAIT_LONGER = (
    "trainer.strategy.timeout.seconds=<s> under trainer=ddp_cpu, trainer.strategy.timeout_s=<s> "
    "under trainer=fsdp"
)


def launch_problem(cfg: DictConfig) -> str | None:
    """What is wrong with the launcher's variables for the run `cfg` describes, in one line, or
    None. Each refusal is a setting Lightning would trip over: a value that is not a number, a
    SLURM job that srun did not start, a SLURM job whose run folder each task and each requeued
    attempt would make anew, a node rank past trainer.num_nodes, a LOCAL_RANK that no
    launcher set, a MASTER_ADDR no one can resolve, a MASTER_PORT another process holds."""
    for name, (least, todo) in NUMBERS.items():
        if bad := number_problem(name, least, todo):
            return bad
    # torchrun in a SLURM job (`srun torchrun`, or torchrun in the batch script): Lightning takes
    # torchrun's ranks first and reads none of SLURM's.
    if not TorchElasticEnvironment.detect() and (bad := slurm_problem()):
        return bad
    if bad := slurm_run_folder_problem(cfg):  # each task, each requeued attempt: a new folder
        return bad
    trainer = cfg.get("trainer") or {}
    num_nodes = trainer.get("num_nodes") or 1
    devices = trainer.get("devices")
    if type(devices) is int and type(num_nodes) is int and devices * num_nodes == 1:
        # One process meets no one: a stale MASTER_ADDR, a MASTER_PORT another job holds or a
        # container's LOCAL_RANK=0 are not read. A NODE_RANK or LOCAL_RANK past 0 is still
        # refused: Lightning reads it for the process's rank, which must be 0 to log and save.
        if any(env.detect() for env in CLUSTERS_THAT_START_NODES):
            return None
        stray_local = os.environ.get("LOCAL_RANK", "0") != "0"
        return node_rank_problem(num_nodes) or (local_rank_problem() if stray_local else None)
    if "TORCHELASTIC_RUN_ID" not in os.environ and (bad := address_problem()):
        return bad  # (torchrun set the address itself)
    if any(env.detect() for env in CLUSTERS_THAT_START_NODES):
        return None  # the cluster set each process's ranks
    return node_rank_problem(num_nodes) or local_rank_problem() or port_problem()


def number_problem(name: str, least: int, todo: str) -> str | None:
    """Variable `name`, when set, is not a whole number of at least `least` (a port: at most
    65535): Lightning's `int()` of it was a traceback."""
    value = os.environ.get(name)
    if value is None or (value == "" and name in EMPTY_IS_UNSET):
        return None
    highest = HIGHEST_PORT if name == "MASTER_PORT" else None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is not None and number >= least and (highest is None or number <= highest):
        return None
    span = f"from {least} to {highest}" if highest else f"of {least} or more"
    return f"{name}={value!r} is not a whole number {span}: {todo}"


def slurm_problem() -> str | None:
    """A SLURM job to Lightning (SLURM_NTASKS set, SLURM_JOB_NAME not `bash` or `interactive`)
    whose per-task variables are missing: a command started in the job without srun, or a shell
    that kept an allocation's variables. Lightning failed on the first one it read."""
    if not SLURMEnvironment.detect():
        return None
    for name, least in SLURM_NUMBERS.items():
        if bad := number_problem(name, least, SRUN_TODO):
            return bad
    ntasks = int(os.environ["SLURM_NTASKS"])
    missing = [name for name in SRUN_TASK_VARIABLES if name not in os.environ]
    if ntasks > 1 and "SLURM_NTASKS_PER_NODE" not in os.environ:
        missing.append("SLURM_NTASKS_PER_NODE")
    if not missing:
        return None
    if missing == ["SLURM_NTASKS_PER_NODE"]:  # srun started it, from a job of --ntasks only
        return (
            f"SLURM_NTASKS={ntasks} is set but not SLURM_NTASKS_PER_NODE, which Lightning needs: "
            "submit the job with --ntasks-per-node=<trainer.devices> and "
            f"--nodes=<trainer.num_nodes> instead of --ntasks={ntasks}"
        )
    return (
        f"SLURM_NTASKS={ntasks} makes this a SLURM job to Lightning, but {', '.join(missing)} "
        "are not set (srun sets them in each task it starts): start the command with srun "
        "(--ntasks-per-node=<trainer.devices>); outside a SLURM job, unset the SLURM_* "
        "variables; in an interactive allocation, set SLURM_JOB_NAME=interactive and Lightning "
        "starts the processes itself"
    )


def node_rank_problem(num_nodes: object) -> str | None:
    """Lightning's own launcher: this node's rank (NODE_RANK, else GROUP_RANK) must be below
    `trainer.num_nodes`, or its processes take ranks past the run's and wait for the timeout."""
    name = next((n for n in ("NODE_RANK", "GROUP_RANK") if n in os.environ), None)
    if name is None or not isinstance(num_nodes, int) or int(os.environ[name]) < num_nodes:
        return None
    return (
        f"{name}={os.environ[name]} but trainer.num_nodes={num_nodes}: node ranks run from 0 to "
        f"{num_nodes - 1}: pass trainer.num_nodes=<the number of nodes> on every node, or unset "
        f"{name} on one machine"
    )


def local_rank_problem() -> str | None:
    """LOCAL_RANK makes Lightning take this process for one that a launcher started
    (`LightningEnvironment.creates_processes_externally`): it starts no others and meets them at
    MASTER_PORT. Lightning's own launcher sets MASTER_PORT with it, as must anyone who starts
    every process by hand: without it each process picks a free port of its own, and they never
    meet. torchrun and srun are clusters, checked before."""
    value = os.environ.get("LOCAL_RANK")
    if value is None or "MASTER_PORT" in os.environ:
        return None
    return (
        f"LOCAL_RANK={value} is set, but no launcher started this process (torchrun, or "
        "Lightning's own, which sets it with MASTER_PORT): Lightning would start no other process "
        "and wait for them: unset LOCAL_RANK (Lightning starts trainer.devices processes "
        "itself), or start the command with torchrun"
    )


def address_problem() -> str | None:
    """A MASTER_ADDR this machine cannot resolve: torch retried it until the timeout."""
    address = os.environ.get("MASTER_ADDR")
    if address is None:
        return None
    try:
        socket.getaddrinfo(address, None)
    except socket.gaierror as err:
        if err.errno not in NOT_A_HOST:
            return None  # torch tries again
        return (
            f"MASTER_ADDR={address!r} is not an address this machine can resolve "
            f"({err.strerror}): set it to node 0's host name or IP address (the same on every "
            "node), or unset it on one machine"
        )
    return None


def port_problem() -> str | None:
    """Under Lightning's own launcher, the process that will be rank 0 (no LOCAL_RANK, node 0)
    listens on MASTER_PORT: a port another process holds failed torch's rendezvous at once, after
    the other ranks had started (each then printed an error of its own)."""
    port = os.environ.get("MASTER_PORT")
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0"))
    if port is None or "LOCAL_RANK" in os.environ or int(node) != 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not taken
        try:
            probe.bind(("", int(port)))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                return None
            return port_taken(port, f"EADDRINUSE: {err.strerror}")
    return None


def port_taken(port: str, why: str) -> str:
    return (
        f"MASTER_PORT={port} cannot be listened on here ({why}): free it (another process, an "
        "earlier run's perhaps, listens on it), set MASTER_PORT to a free port (the same on "
        "every node), or unset MASTER_PORT to let Lightning pick one"
    )


def rendezvous_failure(err: BaseException) -> LMTrainError | None:
    """torch's rendezvous, failed, as one line (None for anything else):
    - DistStoreError: it gave up waiting for the other processes (a SLURM task, a node or a
      torchrun rank that never started), with torch's count of those that joined;
    - DistNetworkError: rank 0 could not listen on MASTER_PORT, or this process could not reach
      rank 0 at MASTER_ADDR:MASTER_PORT (the values Lightning set, read before the task's
      environment is restored)."""
    from torch.distributed import DistNetworkError, DistStoreError

    network = find_cause(err, DistNetworkError)
    words = " ".join(str(network).split()).rstrip(".")
    port = os.environ.get("MASTER_PORT", "<unset>")
    if network is not None and "failed to listen" in words:
        why, listened = words, re.search(r"port: (\d+),.*name: (\w+), message: ([^.]+)", words)
        if listened:
            port, why = listened.group(1), f"{listened.group(2)}: {listened.group(3)}"
        return LMTrainError(port_taken(port, why))
    if network is not None and "to connect to" in words:  # not a peer gone mid-run
        address = os.environ.get("MASTER_ADDR", "<unset>")
        return LMTrainError(
            f"could not reach rank 0 of the run at MASTER_ADDR={address} MASTER_PORT={port} "
            f"({words}): start node 0 with the same MASTER_ADDR and MASTER_PORT, set MASTER_ADDR "
            f"to node 0's address as this node reaches it, or wait longer: {WAIT_LONGER}"
        )
    timeout = find_cause(err, DistStoreError)
    if timeout is None:
        return None
    return LMTrainError(
        f"the run's processes did not all start: {' '.join(str(timeout).split())}: start "
        "trainer.devices x trainer.num_nodes of them (srun --ntasks, torchrun --nnodes, "
        f"NODE_RANK on every node), or wait longer: {WAIT_LONGER}"
    )
