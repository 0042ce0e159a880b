"""A resumed checkpoint whose optimizer state does not fit the run's optimizer is refused in one
line before Lightning restores it (red team fault28, findings 1 and 2).

An `exp_avg` of another shape, its tensor digest written again as anyone can, loaded and ran the
default fused AdamW out of bounds (a segfault, exit 139); a missing parameter group ended in
torch's ValueError traceback and left the refused command's run folder behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.models.optimizer_state_checks import entries_problem
from lmtrain.utils.safe_load import load_torch_file
from lmtrain.utils.tensor_digest import DIGEST_KEY, add_digest
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

MUON = "model/optimizer=muon"
QUIET = ("logger=csv", "callbacks.text_samples=null")


def trained_last(root: Path, data_dir: Path, *overrides: str) -> tuple[Path, Path]:
    """(last.ckpt, corpus) of a finished 2-step tiny run under `root`."""
    corpus = one_file_corpus(root / "corpus")
    run = root / "run"
    cli = tiny_cli(
        root,
        data_dir,
        *QUIET,
        "trainer.max_steps=2",
        f"hydra.run.dir={run}",
        *overrides,
        corpus=corpus,
    )
    out = run_cli("train", *cli)
    assert out.returncode == 0, out.stderr[-3000:]
    return run / "checkpoints" / "last.ckpt", corpus


@pytest.fixture(scope="module")
def adamw_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    return trained_last(tmp_path_factory.mktemp("adamw"), data_dir)


def edited(
    last: Path, out: Path, edit: Callable[[dict[str, Any]], None], digest: bool = True
) -> Path:
    """A copy of `last` at `out` changed by `edit`, its tensor digest written again (`digest`)
    or left out (read as a checkpoint of an older lmtrain)."""
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint.pop(DIGEST_KEY, None)
    edit(checkpoint)
    if digest:
        add_digest(checkpoint)
    torch.save(checkpoint, out)
    return out


def resume(tmp_path: Path, data_dir: Path, corpus: Path, ckpt: Path, *overrides: str) -> Any:
    """`ckpt_path=<ckpt>` into a new run folder under tmp_path/logs, 2 steps further."""
    cli = tiny_cli(
        tmp_path,
        data_dir,
        *QUIET,
        "trainer.max_steps=4",
        f"ckpt_path={ckpt}",
        *overrides,
        corpus=corpus,
    )
    return run_cli("train", *cli)


def assert_no_run_folder(tmp_path: Path) -> None:
    """The refused command left no run folder of its own behind."""
    runs = tmp_path / "logs" / "train" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


def first_param_shape(checkpoint: dict[str, Any]) -> tuple[int, ...]:
    """The shape of group 0's first parameter (its exp_avg, as saved)."""
    state = checkpoint["optimizer_states"][0]
    first = state["param_groups"][0]["params"][0]
    return tuple(state["state"][first]["exp_avg"].shape)


def test_an_exp_avg_of_another_shape_is_one_line_not_a_segfault(
    adamw_run: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    last, corpus = adamw_run
    shape = first_param_shape(torch.load(last, map_location="cpu", weights_only=True))

    def shrink(checkpoint: dict[str, Any]) -> None:
        state = checkpoint["optimizer_states"][0]
        state["state"][state["param_groups"][0]["params"][0]]["exp_avg"] = torch.zeros(3)

    ckpt = edited(last, tmp_path / "shape.ckpt", shrink)
    out = resume(tmp_path, data_dir, corpus, ckpt)
    assert_one_line_error(
        out,
        f"ckpt_path={str(ckpt)!r}",
        "group 0 param 0",
        f"exp_avg has shape (3,) but the parameter {shape}",
        "drop ckpt_path",
    )
    assert_no_run_folder(tmp_path)


def test_a_missing_parameter_group_is_one_line_and_leaves_no_run_folder(
    adamw_run: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    last, corpus = adamw_run
    ckpt = edited(
        last, tmp_path / "groups.ckpt", lambda c: c["optimizer_states"][0]["param_groups"].pop()
    )
    out = resume(tmp_path, data_dir, corpus, ckpt)
    assert_one_line_error(
        out, f"ckpt_path={str(ckpt)!r}", "1 parameter group", "this optimizer 2", "intact"
    )
    assert_no_run_folder(tmp_path)


def test_a_step_of_several_values_and_a_sparse_moment_are_refused(
    adamw_run: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    """A `step` of several values (the fused kernel reads one) and a moment of the right shape
    but sparse (weights-only loading allows sparse tensors; the digest cannot hash one, so the
    file leaves it out, as an older checkpoint does) are refused too."""
    last, corpus = adamw_run

    def edit_entry(key: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
        def edit(checkpoint: dict[str, Any]) -> None:
            state = checkpoint["optimizer_states"][0]
            entries = state["state"][state["param_groups"][0]["params"][0]]
            entries[key] = value(entries[key])

        return edit

    cases = {
        "step holds 3 values, not one": edit_entry("step", lambda t: torch.zeros(3)),
        "exp_avg is a torch.sparse_coo tensor": edit_entry("exp_avg", lambda t: t.to_sparse()),
    }
    for index, (fragment, edit) in enumerate(cases.items()):
        ckpt = edited(last, tmp_path / f"entry{index}.ckpt", edit, digest=index == 0)
        assert_one_line_error(resume(tmp_path, data_dir, corpus, ckpt), "group 0 param 0", fragment)
    assert_no_run_folder(tmp_path)


def test_a_muon_parts_momentum_of_another_shape_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """model/optimizer=muon: one torch state per part, each checked against its part's groups;
    the intact checkpoint still resumes."""
    last, corpus = trained_last(tmp_path / "trained", data_dir, MUON)

    def shrink(checkpoint: dict[str, Any]) -> None:
        state = checkpoint["optimizer_states"][0]["muon"]
        state["state"][state["param_groups"][0]["params"][0]]["momentum_buffer"] = torch.zeros(2)

    ckpt = edited(last, tmp_path / "muon.ckpt", shrink)
    out = resume(tmp_path, data_dir, corpus, ckpt, MUON)
    assert_one_line_error(out, "part muon: group 0 param 0", "momentum_buffer has shape (2,)")
    assert_no_run_folder(tmp_path)
    intact = resume(tmp_path, data_dir, corpus, last, MUON)
    assert intact.returncode == 0, intact.stderr[-3000:]


def test_a_sparse_tensor_beside_a_digest_is_one_line_not_torchs_error(tmp_path: Path) -> None:
    """The digest hashes each tensor's bytes, which a sparse tensor has not: `verify` raised
    torch's RuntimeError from `.contiguous()` (red team fault28's fixer)."""
    path = tmp_path / "sparse.ckpt"
    sparse = torch.eye(3).to_sparse()
    torch.save({"state_dict": {"w": sparse}, DIGEST_KEY: "0" * 64}, path)
    with pytest.raises(LMTrainError) as refused:
        load_torch_file(path)
    assert str(refused.value).startswith(
        f"ckpt_path={str(path)!r} holds a torch.sparse_coo tensor at /state_dict/w, which no "
        "checkpoint lmtrain writes holds (the file was changed after it was saved): "
    )


def test_sgd_without_momentum_saved_as_none_passes_and_a_string_moment_does_not() -> None:
    """torch up to 2.1 saved SGD's `momentum_buffer: None` without momentum, which torch still
    loads: not a moment of another shape (review)."""
    shape = torch.Size([3, 2])
    assert entries_problem({"momentum_buffer": None, "step": torch.tensor(4.0)}, shape) is None
    assert entries_problem({"exp_avg": "x"}, shape) == "exp_avg is a str, not a tensor"
