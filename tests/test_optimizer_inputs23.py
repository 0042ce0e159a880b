"""Optimizer and schedule inputs the red team (rev_api23) found unchecked: a `num_training_steps`
the user set was silently replaced by the run's length; from Python, values the command line
refuses (`maximize="no"` trained by gradient ascent with exit 0) went through; torch's refusals
on the plain-optimizer path were tracebacks after the data; and a Muon checkpoint resumed with
one optimizer ended in KeyError 'param_groups'. Each is now one line, and the command line's
before any data is prepared."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from lmtrain.errors import LMTrainError
from lmtrain.models.muon import BatchedMuon
from lmtrain.models.optimizers import OptimizerParts
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY_RUN
from tests.helpers.corpora import one_file_corpus
from tests.test_python_api import data_module, module, trainer

ADAMW = functools.partial(torch.optim.AdamW, lr=3e-3)
COSINE = functools.partial(transformers.get_cosine_schedule_with_warmup, num_warmup_steps=2)
MIN_LR_COSINE = transformers.get_cosine_with_min_lr_schedule_with_warmup
# model.optimizer of one Muon over the whole model (model/optimizer=adamw's other keys dropped).
MUON_TARGET = (
    "model.optimizer._target_=lmtrain.models.muon.BatchedMuon",
    "~model.optimizer.betas",
    "~model.optimizer.eps",
    "~model.optimizer.fused",
)

COMMAND_LINES = {
    "a run length of one's own": (
        ("+model.scheduler.num_training_steps=1000",),
        "error: model.scheduler.num_training_steps=1000 would be replaced: lmtrain passes "
        "every schedule num_training_steps itself",
        "trainer.max_steps=1000",
    ),
    "a part's run length": (
        ("model/optimizer=muon", "+model.optimizer.muon.scheduler.num_training_steps=50"),
        "error: model.optimizer.muon.scheduler.num_training_steps=50 would be replaced",
        "trainer.max_steps=50",
    ),
    "fused with foreach": (
        ("+model.optimizer.foreach=true",),
        "error: model.optimizer.fused=true with model.optimizer.foreach=true",
        "model.optimizer.foreach=null",
    ),
    "Muon over the whole model": (
        MUON_TARGET,
        "error: model.optimizer._target_=lmtrain.models.muon.BatchedMuon would train every "
        "parameter",
        "model/optimizer=muon",
    ),
}


@pytest.mark.parametrize("case", COMMAND_LINES)
def test_the_command_line_refuses_before_any_data(tmp_path: Path, case: str) -> None:
    overrides, start, advice = COMMAND_LINES[case]
    data_dir = tmp_path / "data"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(start) and advice in last, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not data_dir.exists() or not any(data_dir.iterdir())  # nothing prepared


def test_torchs_refusal_on_the_plain_path_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    # SGD's Nesterov needs momentum: torch says so only when the optimizer is built.
    overrides = (
        "model.optimizer._target_=torch.optim.SGD",
        "~model.optimizer.betas",
        "~model.optimizer.eps",
        "~model.optimizer.fused",
        "+model.optimizer.nesterov=true",
    )
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.optimizer: Nesterov momentum requires"), last
    assert "(given SGD(lr=" in last and "nesterov=True" in last, last
    assert "Traceback" not in out.stderr


PYTHON_ARGUMENTS = {
    "gradient ascent": (
        {"optimizer": functools.partial(torch.optim.AdamW, maximize="no")},
        "optimizer.maximize='no' is not true or false",
    ),
    "a learning rate as text": (
        {"optimizer": functools.partial(torch.optim.AdamW, lr="1e-3")},
        "optimizer.lr='1e-3' is not a finite number: pass a positive number (text: pass the "
        "number 1e-3)",
    ),
    "a negative weight decay": (
        {"optimizer": functools.partial(torch.optim.AdamW, weight_decay=-0.1)},
        "optimizer.weight_decay=-0.1 must be in [0, inf)",
    ),
    "fused with foreach": (
        {"optimizer": functools.partial(torch.optim.AdamW, fused=True, foreach=True)},
        "optimizer.fused=true with optimizer.foreach=true",
    ),
    "Muon over the whole model": (
        {"optimizer": functools.partial(BatchedMuon, lr=5e-3)},
        "optimizer=BatchedMuon would train every parameter",
    ),
    "a floor below zero": (
        {"scheduler": functools.partial(MIN_LR_COSINE, num_warmup_steps=1, min_lr_rate=-2)},
        "scheduler.min_lr_rate=-2 must be in [0, 1]",
    ),
    "a negative warm-up": (
        {"scheduler": functools.partial(COSINE, num_warmup_steps=-5)},
        "scheduler.num_warmup_steps=-5 must be at least 0",
    ),
    "a run length of one's own": (
        {"scheduler": functools.partial(COSINE, num_training_steps=1000)},
        "scheduler binds num_training_steps=1000, which the module would replace",
    ),
}


@pytest.mark.parametrize("case", PYTHON_ARGUMENTS)
def test_python_values_are_checked_as_the_command_lines(case: str) -> None:
    settings, expected = PYTHON_ARGUMENTS[case]
    with pytest.raises(LMTrainError) as refused:
        module(None, **settings)
    assert str(refused.value).startswith(expected), refused.value
    assert "\n" not in str(refused.value)


MUON_PART = {"params": "block_matrices", "optimizer": functools.partial(BatchedMuon)}
PARTS = {
    "gradient ascent": (
        {"optimizer": functools.partial(ADAMW, maximize=1)},
        "model.optimizer.adamw.optimizer.maximize=1 is not true or false",
    ),
    "a run length of its own": (
        {"optimizer": ADAMW, "scheduler": {"num_training_steps": 9}},
        "model.optimizer.adamw.scheduler binds num_training_steps=9",
    ),
    "a negative warm-up of its own": (
        {"optimizer": ADAMW, "scheduler": functools.partial(COSINE, num_warmup_steps=-1)},
        "model.optimizer.adamw.scheduler.num_warmup_steps=-1 must be at least 0",
    ),
}


@pytest.mark.parametrize("case", PARTS)
def test_python_parts_are_checked_as_the_command_lines(case: str) -> None:
    part, expected = PARTS[case]
    with pytest.raises(LMTrainError) as refused:
        OptimizerParts(muon=MUON_PART, adamw={"params": "rest", **part})
    assert str(refused.value).startswith(expected), refused.value
    assert "\n" not in str(refused.value)


def test_python_values_torch_takes_pass() -> None:
    # A tensor learning rate and numpy numbers are torch's own; a plain class binds nothing.
    for optimizer in (
        functools.partial(torch.optim.AdamW, lr=torch.tensor(1e-3), betas=(0.9, np.float32(0.95))),
        torch.optim.AdamW,
    ):
        module(None, optimizer=optimizer, scheduler=functools.partial(COSINE, num_warmup_steps=0))


def test_a_python_optimizer_torch_refuses_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    datamodule = data_module(one_file_corpus(tmp_path / "corpus"), data_dir)
    sgd = functools.partial(torch.optim.SGD, lr=0.1, nesterov=True)  # no momentum: torch refuses
    with pytest.raises(LMTrainError) as refused:
        trainer(tmp_path, max_steps=2).fit(module(datamodule.tokenizer, optimizer=sgd), datamodule)
    assert str(refused.value).startswith("model.optimizer: Nesterov momentum requires")
    assert "(given SGD(lr=0.1, nesterov=True)): change that value" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_muon_checkpoint_resumed_with_one_optimizer_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    datamodule = data_module(one_file_corpus(tmp_path / "corpus"), data_dir)
    parts = OptimizerParts(
        muon={"params": "block_matrices", "optimizer": functools.partial(BatchedMuon, lr=5e-3)},
        adamw={"params": "rest", "optimizer": ADAMW},
    )
    first = trainer(tmp_path, max_steps=2)
    first.fit(module(datamodule.tokenizer, optimizer=parts, scheduler=COSINE), datamodule)
    ckpt = tmp_path / "muon.ckpt"
    first.save_checkpoint(ckpt)
    plain = module(datamodule.tokenizer, scheduler=COSINE)
    with pytest.raises(LMTrainError) as refused:
        trainer(tmp_path, max_steps=4).fit(plain, datamodule, ckpt_path=ckpt)
    assert str(refused.value).startswith(
        f"ckpt_path={str(ckpt)!r} holds the optimizer states of parts ['adamw', 'muon']"
    ), refused.value
    # The same checkpoint resumes with its own optimizer config.
    again = OptimizerParts(**{k: dict(v) for k, v in parts.parts.items()})
    resumed = trainer(tmp_path, max_steps=4)
    resumed.fit(
        module(datamodule.tokenizer, optimizer=again, scheduler=COSINE), datamodule, ckpt_path=ckpt
    )
    assert resumed.global_step == 4


def lora_base(tmp_path: Path) -> Path:
    """A tiny GPT-2 folder (save_pretrained) for experiment=finetune_lora."""
    from tests.helpers.pretrained import save_tiny_pretrained

    return save_tiny_pretrained(tmp_path / "base", ["a tiny corpus of words\n"] * 50, n_layer=1)


def test_lora_trains_with_muon_alone(tmp_path: Path, data_dir: Path) -> None:
    # LoRA's trainable parameters are 2-D adapters: a Muon over them is no whole-model Muon.
    torch_muon = ("model.optimizer._target_=torch.optim.Muon", *MUON_TARGET[1:])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a tiny corpus of words\n" * 400)
    out = run_cli(
        "train",
        "experiment=finetune_lora",
        f"model.pretrained={lora_base(tmp_path)}",
        f"data.source.path={corpus}",
        *TINY_RUN,
        "callbacks.text_samples=null",
        "logger=none",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *torch_muon,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_muon_with_a_freeze_is_torchs_line_with_the_parts_advice(
    tmp_path: Path, data_dir: Path
) -> None:
    overrides = (*MUON_TARGET, "model.freeze.embeddings=true")
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.optimizer: Muon only supports 2D parameters"), last
    assert last.endswith("use model/optimizer=muon (Muon for the blocks' matrices)"), last


def test_python_muon_is_refused_only_when_every_parameter_trains() -> None:
    from lmtrain.utils.optimizer_checks import check_factories
    from lmtrain.utils.optimizer_values import trains_every_parameter

    assert trains_every_parameter({}, {"embeddings": False, "first_n_blocks": 0})
    assert not trains_every_parameter({"r": 8}, None)
    assert not trains_every_parameter(None, {"first_n_blocks": 1})
    check_factories(functools.partial(BatchedMuon, lr=5e-3), None, every_parameter_trains=False)
    with pytest.raises(LMTrainError, match="would train every parameter"):
        check_factories(functools.partial(BatchedMuon, lr=5e-3), None)


def test_python_values_of_other_optimizers_and_numpy_bools_pass() -> None:
    # Adafactor's eps is a pair (its own rule, not AdamW's); numpy bools are torch's own.
    adafactor = functools.partial(
        transformers.Adafactor, lr=1e-3, relative_step=False, eps=(1e-30, 1e-3)
    )
    module(None, optimizer=adafactor)
    module(None, optimizer=functools.partial(torch.optim.Adam, amsgrad=np.True_))


def test_the_run_length_itself_gets_advice_that_changes_something() -> None:
    """`num_training_steps=${trainer.max_steps}` was told to set trainer.max_steps to what it is."""
    from lmtrain.utils.checks import Problems
    from lmtrain.utils.optimizer_checks import check_optimization

    schedule = {"scheduler": {**dict(COSINE.keywords), "num_training_steps": 20}}
    for max_steps, words in ((20, "is what lmtrain passes already"), (21, "would be replaced")):
        problems = Problems()
        check_optimization(schedule, problems, max_steps)
        (line,) = problems.found
        assert words in line and "~model.scheduler.num_training_steps" in line, line
        assert ("trainer.max_steps=20" in line) is (max_steps == 21), line
