"""`trainer.strategy` settings refused before any rank starts, and a sharded checkpoint's
`.metadata` given as ckpt_path: one `error:` line each, nothing written.

Red team: under `trainer=ddp_cpu` a process group backend that is not built in (nccl, mpi) was
a traceback on both ranks, and a timeout of 0 seconds or less a page of C++ frames that blamed
the network; Lightning's `ddp_spawn` was a pickling traceback, and `ddp_fork` trained to its end
and failed writing its metrics. A sharded folder's `.metadata` was called "not a zip-format
torch file (damaged, or an old or foreign save)", though lmtrain wrote it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.strategies import StrategyRegistry

from lmtrain.utils.checks import Problems
from lmtrain.utils.config_checks import plain
from lmtrain.utils.strategy_checks import check_strategy
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.test_consolidate_inputs import sharded_checkpoint

NCCL = (
    "trainer.strategy.process_group_backend='nccl': nccl is not available on this machine (NCCL "
    "needs GPUs and a CUDA build of torch): pass gloo for CPU processes (as trainer=ddp_cpu and "
    "trainer=fsdp_cpu do), or null"
)
SPAWN = (
    "trainer.strategy=ddp_spawn starts its processes by spawn, which lmtrain does not support: "
    "use trainer=ddp_cpu (or trainer=ddp)"
)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["trainer=ddp_cpu", "trainer.strategy.process_group_backend=nccl"], NCCL),
        (
            ["trainer=ddp_cpu", "trainer.strategy.process_group_backend=mpi"],
            "trainer.strategy.process_group_backend='mpi': mpi is not available on this "
            "machine (not built into torch): pass gloo for CPU processes (as trainer=ddp_cpu "
            "and trainer=fsdp_cpu do), or null",
        ),
        (
            ["trainer=ddp_cpu", "trainer.strategy.timeout.seconds=0"],
            "trainer.strategy.timeout.seconds=0 must be positive (how long a rank waits for the "
            "others): pass e.g. trainer.strategy.timeout.seconds=300",
        ),
        (
            ["trainer=ddp_cpu", "trainer.strategy.timeout.seconds=-5"],
            "trainer.strategy.timeout.seconds=-5 must be positive (how long a rank waits for the "
            "others): pass e.g. trainer.strategy.timeout.seconds=300",
        ),
        (["trainer=cpu", "trainer.devices=2", "+trainer.strategy=ddp_spawn"], SPAWN),
        (
            ["trainer=cpu", "trainer.devices=2", "+trainer.strategy=ddp_fork"],
            "trainer.strategy=ddp_fork starts its processes by fork, which lmtrain does not "
            "support: use trainer=ddp_cpu (or trainer=ddp)",
        ),
        (
            ["trainer=ddp_cpu", "+trainer.strategy.start_method=spawn"],
            "trainer.strategy.start_method='spawn' starts the processes by spawn, which lmtrain "
            "does not support: drop it (popen, the default, runs the command again for each "
            "rank), or use trainer=ddp_cpu (or trainer=ddp)",
        ),
        (["trainer=fsdp_cpu", "trainer.strategy.process_group_backend=nccl"], NCCL),
    ],
    ids=[
        "nccl",
        "mpi",
        "timeout-0",
        "timeout-negative",
        "ddp_spawn",
        "ddp_fork",
        "start_method",
        "fsdp-nccl",
    ],
)
def test_bad_strategy_settings_stop_before_any_rank_starts(
    tmp_path: Path, data_dir: Path, overrides: list[str], line: str
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *overrides, "logger=csv")
    out = run_cli("train", *cli, f"hydra.run.dir={run}", timeout=300)
    assert out.returncode == 1
    assert assert_one_line_error(out) == f"error: {line}"
    assert "Initializing distributed" not in out.stdout + out.stderr
    assert not run.exists()  # refused before any work: the folder it made is removed


def strategy_problems(strategy: object) -> list[str]:
    problems = Problems()
    check_strategy({"strategy": strategy}, problems)
    return problems.found


def test_every_registered_strategy_that_spawns_or_forks_is_refused_and_no_other() -> None:
    """Read from Lightning's registry, so that a name it adds is judged by its start method."""
    for name in StrategyRegistry.available_strategies():
        method = StrategyRegistry[name]["init_params"].get("start_method")
        found = strategy_problems(name)
        if method in ("spawn", "fork", "forkserver"):
            assert found == [
                f"trainer.strategy={name} starts its processes by {method}, which lmtrain does "
                "not support: use trainer=ddp_cpu (or trainer=ddp)"
            ]
        else:
            assert found == [], name
    assert "ddp_notebook" in StrategyRegistry.available_strategies()
    assert strategy_problems("ddp_notebook") != []
    assert strategy_problems("auto") == strategy_problems("ddp") == []


def timedelta_of(**parts: object) -> dict[str, object]:
    return {"_target_": "datetime.timedelta", **parts}


@pytest.mark.parametrize(
    ("timeout", "found"),
    [
        (timedelta_of(seconds=300), []),
        (timedelta_of(minutes=1, seconds=-5), []),  # 55 seconds
        (timedelta_of(seconds=0.5), []),
        (None, []),  # torch's default
        (
            timedelta_of(minutes=0, seconds=-1),
            [
                "trainer.strategy.timeout (minutes=0, seconds=-1) adds up to -1 seconds, which "
                "must be positive (how long a rank waits for the others): pass e.g. "
                "trainer.strategy.timeout.seconds=300"
            ],
        ),
        (
            timedelta_of(),
            [
                "trainer.strategy.timeout (nothing set) adds up to 0 seconds, which must be "
                "positive (how long a rank waits for the others): pass e.g. "
                "trainer.strategy.timeout.seconds=300"
            ],
        ),
        (
            timedelta_of(minutes="abc"),
            ["trainer.strategy.timeout.minutes='abc' is not a number: pass a number of minutes"],
        ),
        (
            timedelta_of(secs=4),
            [
                "trainer.strategy.timeout.secs is not an argument of datetime.timedelta: did you "
                "mean seconds?"
            ],
        ),
        (
            timedelta_of(seconds=float("inf")),
            [
                "trainer.strategy.timeout (seconds=inf) is longer than a time span can be: pass "
                "e.g. trainer.strategy.timeout.seconds=300"
            ],
        ),
        (
            5,
            [
                "trainer.strategy.timeout=5 is not a time span: pass "
                "trainer.strategy.timeout._target_=datetime.timedelta with "
                "trainer.strategy.timeout.seconds=<seconds> (as trainer=ddp_cpu does), or null"
            ],
        ),
    ],
)
def test_a_timeout_is_a_positive_time_span(timeout: object, found: list[str]) -> None:
    strategy = {"_target_": "lightning.pytorch.strategies.DDPStrategy", "timeout": timeout}
    assert strategy_problems(strategy) == found


def test_gloo_and_the_shipped_ddp_cpu_strategy_pass() -> None:
    strategy = {
        "_target_": "lightning.pytorch.strategies.DDPStrategy",
        "process_group_backend": "gloo",
        "start_method": "popen",
        "timeout": timedelta_of(seconds=300),
    }
    assert strategy_problems(strategy) == []


@pytest.mark.parametrize("name", [".metadata", "meta.pt"])
@pytest.mark.parametrize("command", ["eval", "generate", "export", "train"])
def test_a_sharded_folders_metadata_given_as_ckpt_path_names_its_folder(
    tmp_path: Path, data_dir: Path, command: str, name: str
) -> None:
    folder = sharded_checkpoint(tmp_path / "fsdp_run" / "last.ckpt")
    metadata = folder / name
    run = tmp_path / "run"
    extra = {
        "export": [f"out_dir={tmp_path / 'export'}"],
        "train": tiny_cli(tmp_path, data_dir, "logger=csv"),
    }.get(command, [])
    out = run_cli(command, *extra, f"ckpt_path={metadata}", f"hydra.run.dir={run}", timeout=300)
    assert assert_one_line_error(out) == (
        f"error: ckpt_path='{metadata}' is no checkpoint on its own: it is one file of the "
        f"sharded checkpoint {folder} (trainer=fsdp): pass the folder to resume with "
        f"trainer=fsdp, or merge it into one file for eval, generate and export with `python -m "
        f"lmtrain.strategies consolidate {folder}`"
    )
    assert not (tmp_path / "export").exists()
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_cpu", "fsdp", "fsdp_cpu"])
def test_every_shipped_trainer_passes_the_strategy_checks(compose_cfg, trainer: str) -> None:
    composed = compose_cfg(f"trainer={trainer}", tiny=False).trainer
    assert strategy_problems(plain(composed).get("strategy")) == []
