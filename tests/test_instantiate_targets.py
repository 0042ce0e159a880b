"""What a config entry or a checkpoint file turns out to be, said in one line.

- A callbacks or logger entry whose `_target_` gives something that is not a Lightning Callback
  or Logger (`+callbacks.x._target_=builtins.dict`) failed inside Lightning, as a traceback
  (`'dict' object has no attribute 'on_exception'`).
- A checkpoint that is not zip-format (torch.save's legacy format, a plain pickle) got torch's
  advice to save it again with `_use_new_zipfile_serialization=True`, as if it were the user's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.models.module import CausalLMModule
from lmtrain.utils.checks import Problems
from lmtrain.utils.config_keys import locate
from lmtrain.utils.instantiate import instantiate_callbacks, instantiate_loggers
from lmtrain.utils.safe_load import load_torch_file
from lmtrain.utils.target_checks import check_targets
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

# A plain pickle of `{}` (protocol 4), as pickle.dumps writes it: no torch.save framing.
RAW_PICKLE = b"\x80\x04}\x94."


@pytest.mark.parametrize(
    ("target", "gave"),
    [("builtins.dict", "{} (a dict)"), ("builtins.print", "None (a NoneType)")],
)
def test_a_callback_target_that_gives_no_callback_is_refused(target: str, gave: str) -> None:
    entries = OmegaConf.create({"x": {"_target_": target}})
    with pytest.raises(LMTrainError) as refused:
        instantiate_callbacks(entries)
    assert str(refused.value) == (
        f"callbacks.x._target_={target!r} gave {gave}, not a Lightning Callback: give "
        "callbacks.x the class path of a Callback, or remove it (~callbacks.x)"
    )


def test_a_logger_target_that_gives_no_logger_is_refused() -> None:
    entries = OmegaConf.create(
        {"csv": {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor"}}
    )
    with pytest.raises(LMTrainError, match=r"logger\.csv\._target_=.*gave a LearningRateMonitor"):
        instantiate_loggers(entries)


def test_callbacks_and_loggers_that_are_what_they_should_be_are_made(tmp_path: Path) -> None:
    callbacks = instantiate_callbacks(
        OmegaConf.create({"lr": {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor"}})
    )
    loggers = instantiate_loggers(
        OmegaConf.create(
            {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path)}}
        )
    )
    assert [type(c).__name__ for c in callbacks] == ["LearningRateMonitor"]
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]


def test_train_with_a_callback_that_is_no_callback_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"),
        "+callbacks.x._target_=builtins.dict",
    )
    assert_one_line_error(
        out, "callbacks.x._target_='builtins.dict' gave {} (a dict), not a Lightning Callback"
    )


class SubclassedModule(CausalLMModule):
    """A researcher's own module: a subclass, which lmtrain.train takes."""


def test_model_and_data_targets_that_are_not_lmtrains_classes_are_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    # Before: OmegaConf tracebacks about missing keys (model_type, source), and a ValueError from
    # dict() of a transformers config object, after the data was prepared.
    boring = "lightning.pytorch.demos.boring_classes"
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"),
        f"model._target_={boring}.BoringModel",
        f"data._target_={boring}.BoringDataModule",
        "+model.config._target_=transformers.GPT2Config",
    )
    line = assert_one_line_error(
        out,
        f"model._target_={boring}.BoringModel is not a subclass of "
        "lmtrain.models.module.CausalLMModule",
        f"data._target_={boring}.BoringDataModule is not a subclass of",
        "drop model.config._target_",
    )
    assert "subclass it" in line
    problems = Problems()
    check_targets({"model": {"_target_": f"{__name__}.SubclassedModule"}}, problems)
    assert problems.found == []


def not_zip_files(folder: Path) -> dict[str, Path]:
    """A legacy-format torch.save of plain tensors, and a plain pickle of a dict."""
    folder.mkdir(parents=True, exist_ok=True)
    legacy, raw = folder / "legacy.ckpt", folder / "raw.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, legacy, _use_new_zipfile_serialization=False)
    raw.write_bytes(RAW_PICKLE)
    return {"legacy": legacy, "raw": raw}


@pytest.mark.parametrize("kind", ["legacy", "raw"])
def test_a_checkpoint_that_is_not_zip_format_is_named_so(tmp_path: Path, kind: str) -> None:
    path = not_zip_files(tmp_path)[kind]
    with pytest.raises(LMTrainError) as refused:
        load_torch_file(path)
    message = str(refused.value)
    start = f"ckpt_path={str(path)!r} is not a readable checkpoint: not a zip-format torch file"
    assert message.startswith(start), message
    assert "an old or foreign save" in message and "mmap" not in message


def test_a_checkpoint_cut_short_is_named_so(tmp_path: Path) -> None:
    """The first 5,000 bytes of a real checkpoint: torch's words were `[Errno 22] Invalid
    argument`."""
    whole, cut = tmp_path / "whole.ckpt", tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.ones(4096)}}, whole)
    cut.write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(LMTrainError) as refused:
        load_torch_file(cut)
    assert str(refused.value).startswith(
        f"ckpt_path={str(cut)!r} is not a readable checkpoint: a zip-format torch file cut short"
    )
    assert load_torch_file(whole)["state_dict"]["w"].sum() == 4096


@pytest.mark.parametrize("tool", ["eval", "generate"])
def test_tools_name_a_legacy_checkpoint_in_one_line(tmp_path: Path, tool: str) -> None:
    path = not_zip_files(tmp_path / "ck")["legacy"]
    extra = ["prompt=the"] if tool == "generate" else []
    out = run_cli(tool, f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}", *extra)
    line = assert_one_line_error(out, "not a zip-format torch file")
    assert "_use_new_zipfile_serialization" not in line


def test_a_module_that_needs_a_missing_package_is_named_as_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lm_eval_tasks.X` without lm_eval: the module exists, what it imports does not (it was
    told 'no module lm_eval_tasks: check the spelling', as a prefix of the missing name)."""
    (tmp_path / "lmtrain_probe_tasks.py").write_text("import lmtrain_probe\n\nclass X: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found, missing = locate("lmtrain_probe_tasks.X")
    assert found is None
    assert missing == (
        "lmtrain_probe_tasks.X needs the module 'lmtrain_probe': install the package providing it"
    )
    assert locate("lmtrain_probe.X")[1].startswith("no module 'lmtrain_probe': check")
    # A ModuleNotFoundError the module raises itself names no module: its trace shows when built.
    (tmp_path / "lmtrain_probe_raises.py").write_text("raise ModuleNotFoundError('no backend')\n")
    assert locate("lmtrain_probe_raises.X") == (None, None)
