"""Shared fixtures: configs composed with the tiny-run overrides, one token cache per session,
and the play that stands in for Tiny Shakespeare.

Hooks: a test whose tmpfs only a user + mount namespace can mount runs in a child pytest there
(tests/helpers/tmpfs.py); under LMTRAIN_STRICT_SKIPS=1 (CI) a skip that is not GPU-only fails.

Tests run the real entry points in-process (`train(cfg)`) or as subprocesses; fixtures only
shrink sizes and point every output at a temporary folder. Nothing outside the repository is
read: every corpus is written by the tests (tests/helpers/corpora.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from tests.helpers import pretrained
from tests.helpers.compose import TINY, compose
from tests.helpers.corpora import SENTENCE_WORDS, write_play
from tests.helpers.environment import SESSION_ENVIRONMENT, restore_session_environment
from tests.helpers.tmpfs import mounted_tmpfs, namespace_request, run_in_namespace

# The only skips LMTRAIN_STRICT_SKIPS=1 (CI) allows: a test that needs GPUs the machine lacks, and
# the flash-attn refusal, which cannot happen where flash-attn is installed (a CUDA-only build).
GPU_ONLY_SKIP = re.compile(
    r"needs a GPU|needs \d+ GPUs|trainer=\w+ runs on GPUs|flash-attn is installed"
)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test whose tmpfs only a user + mount namespace can mount (tests/helpers/tmpfs.py) runs
    in a child pytest there, whose outcome is its own; every other test runs here as usual."""
    scratch = namespace_request(pyfuncitem.nodeid)
    if scratch is None:
        return None
    run_in_namespace(pyfuncitem.nodeid, pyfuncitem.config.rootpath, scratch, SESSION_ENVIRONMENT)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Under LMTRAIN_STRICT_SKIPS=1 a skip that is not GPU-only fails: a test that silently
    stops running where CI runs (no mount, srun installed, ...) would otherwise pass CI."""
    report = yield
    return strict_skip(report)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """The same for a whole module skipped as it is collected (importorskip, module skips)."""
    report = yield
    return strict_skip(report)


Report = TypeVar("Report", pytest.TestReport, pytest.CollectReport)


def strict_skip(report: Report) -> Report:
    """`report`, failed instead where it is a skip LMTRAIN_STRICT_SKIPS=1 does not allow."""
    if SESSION_ENVIRONMENT.get("LMTRAIN_STRICT_SKIPS") != "1" or not report.skipped:
        return report
    if hasattr(report, "wasxfail"):  # an expected failure, not a skip
        return report
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if GPU_ONLY_SKIP.fullmatch(reason):
        return report
    report.outcome = "failed"
    report.longrepr = (
        f"skipped, and LMTRAIN_STRICT_SKIPS=1 allows only GPU-only skips: {reason} "
        "(make the test run here, or run without LMTRAIN_STRICT_SKIPS)"
    )
    return report


@pytest.fixture(autouse=True)
def session_environment() -> Iterator[None]:
    """Each test runs, and starts its subprocesses, in the environment the session started with,
    whatever earlier tests or this module's fixtures did in this process: `seed_everything`
    leaves PL_GLOBAL_SEED (Lightning's DDP ranks re-seed from it), W&B sets WANDB_MODE and
    WANDB_SERVICE. A W&B run here names its service in WANDB_SERVICE, and every subprocess
    started later (a CLI run, a sweep's jobs) would talk to that service instead of starting
    its own as a user's run does; a test that ends the processes it started may have ended
    that service too, failing every later run. Function-scoped fixtures (monkeypatch) come
    after this one and set what their test needs."""
    restore_session_environment()
    yield
    restore_session_environment()


# What a run writes where its paths are left at their defaults (the command's working directory):
# a test that leaves one of these in the checkout writes where a user's runs live.
CHECKOUT_OUTPUTS = ("logs", "data", "wandb", "outputs", "multirun", "exports", "mlruns")


def checkout_outputs(root: Path) -> set[str]:
    """The entries of the checkout's output folders, and any SQLite file at its top."""
    found = {entry.name for entry in root.glob("*.db")}
    for name in CHECKOUT_OUTPUTS:
        folder = root / name
        if folder.is_dir():
            found |= {f"{name}/{entry.name}" for entry in folder.iterdir()} - {"logs/.gitkeep"}
        elif folder.exists():
            found.add(name)
    return found


@pytest.fixture(autouse=True)
def checkout_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test writes its runs, caches and exports under its tmp_path, never into the checkout's
    logs/ or data/: there they pile up between sessions and mix with a developer's own runs.
    (Under xdist another worker's test may be the one named: both ran at that moment.)"""
    root = request.config.rootpath
    before = checkout_outputs(root)
    yield
    new = sorted(checkout_outputs(root) - before)
    if new:
        pytest.fail(
            f"the test wrote {', '.join(new)} into the checkout {root}: point paths.root_dir "
            "(or paths.log_dir, hydra.run.dir) at tmp_path",
            pytrace=False,
        )


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only file system (a tmpfs mounted read-only, which refuses root too)."""
    with mounted_tmpfs(tmp_path / "read-only", "ro") as folder:
        yield folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 folder (2 layers, 32 wide, dropout 0.1) with its BPE, as save_pretrained
    writes it: the pretrained model of the fine-tuning, LoRA and pretrained-folder tests."""
    return pretrained.pretrained_base(tmp_path_factory)


@pytest.fixture(scope="module")
def new_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus the `base` model never saw, for its fine-tuning runs."""
    return pretrained.new_text(tmp_path_factory)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One token cache for the whole session, so each corpus is tokenized once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def play(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A play in one text file (`write_play`), written once: what `data=shakespeare_char` and
    the Shakespeare experiments read in the tests, in place of Tiny Shakespeare."""
    return write_play(tmp_path_factory.mktemp("play") / "play.txt")


@pytest.fixture
def compose_cfg(tmp_path: Path, data_dir: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose `configs/<name>.yaml` (train: with `TINY` first unless tiny=False) plus
    `overrides`; the run folder is tmp_path/run, logs go to tmp_path/logs."""

    def _compose(*overrides: str, name: str = "train", tiny: bool = True) -> DictConfig:
        base = TINY if tiny and name == "train" else []
        return compose(name, tmp_path / "run", data_dir, *base, *overrides)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def epoch_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1600 characters, the last 10% val: 1440 train tokens, 45 windows of 32 (epochs of 5
    steps of 8 windows): tests/test_best_checkpoint18.py, test_early_stopping19.py."""
    corpus = tmp_path_factory.mktemp("epoch_corpus") / "corpus.txt"
    corpus.write_text(((SENTENCE_WORDS + ".\n") * 15)[:1600])
    return corpus
