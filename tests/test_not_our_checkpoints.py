"""Files that `torch.load` reads but that are not our checkpoints (a bare tensor, a list, another
tool's state dict, a dict cut down by hand, a weights-only save) are one line naming the file and
what it lacks, in train, eval, generate and export, before any work starts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model, resolve_ckpt_path
from lmtrain.utils.tensor_digest import DIGEST_KEY, add_digest
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import train_tiny


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("genuine")
    last = train_tiny(root / "run", root / "data", write_corpus(root / "corpus"))
    return torch.load(last, map_location="cpu", weights_only=True)


def save(path: Path, value: object) -> Path:
    torch.save(value, path)
    return path


def without(checkpoint: dict, *keys: str) -> dict:
    """`checkpoint` less `keys`, saved as another tool would: no digest of ours."""
    return {k: v for k, v in checkpoint.items() if k not in (*keys, DIGEST_KEY)}


def weights_only(checkpoint: dict) -> dict:
    """What Lightning's ModelCheckpoint(save_weights_only=True) writes through our CheckpointIO."""
    kept = without(checkpoint, "optimizer_states", "lr_schedulers")
    add_digest(kept)
    return kept


@pytest.fixture
def bad_files(genuine: dict, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each bad file and what its error says."""
    return {
        "tensor": (save(tmp_path / "tensor.ckpt", torch.zeros(3)), "holds a Tensor, not a"),
        "list": (save(tmp_path / "list.ckpt", [1, 2]), "holds a list, not a checkpoint"),
        "hf state dict": (
            save(tmp_path / "hf.ckpt", genuine["state_dict"]),
            "lacks state_dict, lmtrain.hf_config, lmtrain.tokenizer_files",
        ),
        "no lmtrain entry": (
            save(tmp_path / "cut.ckpt", without(genuine, "lmtrain")),
            "lacks lmtrain.hf_config, lmtrain.tokenizer_files, so it was not written by",
        ),
    }


def test_every_reader_refuses_files_that_are_not_checkpoints_in_one_line(
    bad_files: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    for name, (path, message) in bad_files.items():
        for read in (load_model, lambda p: resolve_ckpt_path(str(p), tmp_path)):
            with pytest.raises(LMTrainError) as refusal:
                read(path)
            text = str(refusal.value)
            assert f"ckpt_path={str(path)!r}" in text and message in text, (name, text)
            assert "\n" not in text


def test_a_weights_only_checkpoint_evaluates_but_does_not_resume(
    genuine: dict, tmp_path: Path
) -> None:
    path = save(tmp_path / "weights.ckpt", weights_only(genuine))
    loaded = load_model(path)
    for name, tensor in genuine["state_dict"].items():
        torch.testing.assert_close(loaded.model.state_dict()[name.removeprefix("model.")], tensor)
    with pytest.raises(LMTrainError, match=r"lacks optimizer_states, lr_schedulers, which resum"):
        resolve_ckpt_path(str(path), tmp_path)


@pytest.mark.slow
def test_each_command_says_it_in_one_line(
    bad_files: dict[str, tuple[Path, str]], genuine: dict, tmp_path: Path, data_dir: Path
) -> None:
    weights = save(tmp_path / "weights.ckpt", weights_only(genuine))
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    tensor, hf, cut = (bad_files[k][0] for k in ("tensor", "hf state dict", "no lmtrain entry"))
    runs = {
        "train": (*tiny_cli(tmp_path, data_dir, f"ckpt_path={weights}", "logger=none"),),
        "eval": (f"ckpt_path={tensor}", logs),
        "generate": (f"ckpt_path={hf}", "prompt=x", logs),
        "export": (f"ckpt_path={cut}", f"out_dir={tmp_path / 'hf'}", logs),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:  # ~10 s of startup each, two at a time
        results = dict(zip(runs, pool.map(lambda m: run_cli(m, *runs[m]), runs), strict=True))
    assert_one_line_error(results["train"], str(weights), "which resuming training needs")
    assert_one_line_error(results["eval"], str(tensor), "holds a Tensor")
    assert_one_line_error(results["generate"], str(hf), "lacks state_dict")
    assert_one_line_error(results["export"], str(cut), "lacks lmtrain.hf_config")
    assert not (tmp_path / "hf").exists()
    assert not list((tmp_path / "logs").glob("train/runs/*/checkpoints"))
