"""File names stored in a checkpoint are data: none may reach outside the folder it is joined to.

A checkpoint carries its tokenizer as file names and texts, which the readers write into a
temporary folder to rebuild it (models/checkpoint_contents.py); a sharded (DCP) checkpoint's
`.metadata` names the shard file of each entry, which the reader opens in the checkpoint folder
(utils/safe_load.py). Both passed weights-only loading, being plain strings: a crafted name with
`../` or an absolute path wrote any file the user can write, or read one from outside.
"""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model
from lmtrain.models.checkpoint_contents import tokenizer_file_texts
from lmtrain.models.hf import check_context
from lmtrain.strategies import consolidate
from lmtrain.utils.safe_load import SafeFileSystemReader
from lmtrain.utils.sharded_layout import SHARDED_META_FILE
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.corpora import build_tokenizer
from tests.helpers.sharded_runs import lightning_meta
from tests.test_untrusted_checkpoints import by_name, sharded_folder


def checkpoint_with_tokenizer_files(path: Path, files: dict) -> Path:
    """A checkpoint as eval, generate and export read one (a 1-layer GPT-2 and a char
    tokenizer), with `files` added to its tokenizer's."""
    tokenizer = build_tokenizer("char", ["to be or not to be"])
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=len(tokenizer))
    model = GPT2LMHeadModel(config)
    extra = {"hf_config": config.to_dict(), "tokenizer_files": tokenizer_file_texts(tokenizer)}
    extra["tokenizer_files"].update(files)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "lmtrain": extra, "global_step": 1}, path)
    return path


def test_a_tokenizer_file_name_that_leaves_the_folder_is_refused(tmp_path: Path) -> None:
    absolute, climbing = tmp_path / "written_absolute.txt", tmp_path / "written_relative.txt"
    files = {str(absolute): "x", f"{'../' * 12}{str(climbing).lstrip('/')}": "x"}
    ckpt = checkpoint_with_tokenizer_files(tmp_path / "crafted.ckpt", files)
    result = run_cli(
        "generate", f"ckpt_path={ckpt}", "prompt=to", "max_new_tokens=2",
        f"hydra.run.dir={tmp_path / 'generate'}",
    )  # fmt: skip
    assert_one_line_error(result, str(ckpt), "tokenizer files include", "not a plain file name")
    assert not absolute.exists() and not climbing.exists()

    for files, problem in [
        ({"tokenizer.json": 3}, "hold a int as 'tokenizer.json', not its text"),
        ({"..": "x"}, "include '..', not a plain file name"),
    ]:
        ckpt = checkpoint_with_tokenizer_files(tmp_path / "other.ckpt", files)
        with pytest.raises(LMTrainError, match=problem):
            load_model(ckpt)
    # The genuine files still load.
    ckpt = checkpoint_with_tokenizer_files(tmp_path / "genuine.ckpt", {})
    assert load_model(ckpt).tokenizer.decode(load_model(ckpt).tokenizer.encode("to be")) == "to be"


def test_a_shard_file_name_outside_a_sharded_checkpoint_is_refused(tmp_path: Path) -> None:
    """`.metadata` pointing an entry at `../secret.pt`: consolidate read that file into the
    consolidated checkpoint."""
    folder = sharded_folder(tmp_path / "run" / "last.ckpt")
    secret = tmp_path / "run" / "secret.pt"
    torch.save({"secret": "outside the folder"}, secret)
    metadata = SafeFileSystemReader(folder).read_metadata()
    index, info = next(iter(metadata.storage_data.items()))
    metadata.storage_data[index] = dataclasses.replace(
        info, relative_path="../secret.pt", offset=0, length=secret.stat().st_size
    )
    metadata.storage_meta = None
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))

    with pytest.raises(LMTrainError, match=r"names '\.\./secret\.pt' as a file of its checkpoint"):
        consolidate(folder, tmp_path / "out.ckpt")
    result = subprocess.run(
        [sys.executable, "-m", "lmtrain.strategies", "consolidate", str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_one_line_error(result, "'../secret.pt'", "not a plain file name")
    assert not list(tmp_path.rglob("*.consolidated.ckpt*")) and not (tmp_path / "out.ckpt").exists()


def test_a_damaged_model_entry_is_one_line(tmp_path: Path) -> None:
    """A config without `model_type`, or weights of another shape: KeyError and a many-line
    RuntimeError came out of eval, generate and export."""
    ckpt = checkpoint_with_tokenizer_files(tmp_path / "a.ckpt", {})
    original = torch.load(ckpt, weights_only=True)
    for change, problem in [
        ({"model_type": None}, r"hf_config builds no model \(KeyError: 'model_type'\)"),
        ({"n_embd": 32}, "weights do not fit its lmtrain.hf_config .size mismatch for"),
    ]:
        damaged = {**original, "lmtrain": {**original["lmtrain"]}}
        config = {**damaged["lmtrain"]["hf_config"], **change}
        damaged["lmtrain"]["hf_config"] = {k: v for k, v in config.items() if v is not None}
        torch.save(damaged, tmp_path / "damaged.ckpt")
        with pytest.raises(LMTrainError, match=problem):
            load_model(tmp_path / "damaged.ckpt")
    result = run_cli(
        "generate", f"ckpt_path={tmp_path / 'damaged.ckpt'}", "prompt=to",
        f"hydra.run.dir={tmp_path / 'generate'}",
    )  # fmt: skip
    assert_one_line_error(result, "damaged.ckpt", "weights do not fit", "size mismatch for")


@pytest.mark.parametrize("weights", ["state_dict", "model"])  # FSDP2's layout, and FSDP1's
def test_a_sharded_checkpoint_saved_before_the_first_step_consolidates(
    tmp_path: Path, weights: str
) -> None:
    """Its optimizer has no state yet, and DCP drops the empty entry: consolidate read it as a
    KeyError."""
    folder = tmp_path / "last.ckpt"
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = {weights: model.state_dict(), "optimizer_0": by_name(model, optimizer)}
    dcp.save(state, checkpoint_id=folder, no_dist=True)
    torch.save(lightning_meta(7), folder / SHARDED_META_FILE)
    out = consolidate(folder)
    consolidated = torch.load(out, weights_only=True)
    assert consolidated["optimizer_states"][0]["state"] == {}
    assert consolidated["optimizer_states"][0]["param_groups"][0]["params"]


def test_a_block_size_that_is_not_a_number_is_one_line() -> None:
    """eval reads data.block_size from the checkpoint's run config: "abc" there raised a
    TypeError from the comparison with the model's context."""
    config = GPT2Config(n_positions=32)
    for bad in ["abc", 0, True, 2.5]:
        with pytest.raises(LMTrainError, match=r"block_size=.* is not a positive whole number"):
            check_context(config, bad)
    check_context(config, 32)
