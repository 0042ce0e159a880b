"""Red team rev_after25: `ckpt_path=null` named as unset (it was echoed as Python's `None`), and
`generate device=cuda` without CUDA refused before the checkpoint loads (it came after the load
and its length warnings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import train_tiny


@pytest.mark.parametrize("module", ["eval", "generate", "export"])
def test_a_null_ckpt_path_is_named_as_not_set(module: str, tmp_path: Path) -> None:
    extra = [f"out_dir={tmp_path / 'out'}"] if module == "export" else []
    result = run_cli(module, "ckpt_path=null", f"hydra.run.dir={tmp_path / 'run'}", *extra)
    line = assert_one_line_error(result, "ckpt_path is not set: pass a .ckpt file")
    assert "None" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_generate_on_a_missing_cuda_is_refused_before_the_checkpoint_loads(
    tmp_path: Path, data_dir: Path
) -> None:
    ckpt = train_tiny(
        tmp_path / "train", data_dir, write_corpus(tmp_path / "corpus"), "data.tokenizer.kind=char"
    )
    # 500 new tokens are capped at the 64-token context: a warning the loaded model prints.
    result = run_cli(
        "generate",
        f"ckpt_path={ckpt}",
        "device=cuda",
        "max_new_tokens=500",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "device='cuda' but no CUDA device is visible: pass device=cpu")
    assert "capped" not in result.stderr, result.stderr
    assert "Generating from" not in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_generate_on_a_cuda_index_past_the_visible_ones_is_refused_before_the_checkpoint_loads(
    tmp_path: Path, data_dir: Path
) -> None:
    """`device=cuda:<n>` past the visible devices was torch's "invalid device ordinal"
    traceback after the load (review of rev_after25's fix)."""
    corpus = write_corpus(tmp_path / "corpus")
    ckpt = train_tiny(tmp_path / "train", data_dir, corpus, "data.tokenizer.kind=char")
    past = f"cuda:{torch.cuda.device_count()}"
    result = run_cli(
        "generate",
        f"ckpt_path={ckpt}",
        f"device={past}",
        "max_new_tokens=500",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, f"device='{past}' but", "CUDA device(s) are visible")
    assert "capped" not in result.stderr, result.stderr
