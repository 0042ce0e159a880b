"""After-training tools on input they met late or misread (red team rev_infer19):

- an lm-eval `generate_until` task that keeps lm-eval's default max_gen_toks (256), or any
  max_gen_toks as long as the context, failed lm-eval's assertion with a traceback after the
  whole val split was scored: now one `error:` line before the val split (before the model
  loads when max_length is given), naming the task, its max_gen_toks and the context;
- a training run's folder without checkpoints/last.ckpt was told to pass that missing file;
- `load_from_checkpoint(map_location='meta')` blamed a sound checkpoint for not fitting.

The real lm-eval runs offline on a task the tests write (`dataset_path: json`); the model is
`train_tiny`'s GPT-2 (byte-level BPE, data.block_size=32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import lmtrain.eval as eval_module
from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model, resolve_model_path
from lmtrain.models.module import CausalLMModule
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import eval_tiny, refused_eval, train_tiny
from tests.test_lm_eval import write_task

BLOCK_SIZE = 32  # train_tiny's data.block_size: lm-eval's max_length unless given


def gen_lines(generation_kwargs: str) -> list[str]:
    """A generate_until task's YAML lines, with `generation_kwargs` (a flow mapping)."""
    return [
        "output_type: generate_until",
        'doc_to_text: "{{q}}"',
        'doc_to_target: "{{a}}"',
        f"generation_kwargs: {generation_kwargs}",
        "metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]",
    ]


DOCS = [{"q": "Line 1 says", "a": " yes"}, {"q": "Line 2 says", "a": " no"}]
DEFAULT_KWARGS = '{until: ["\\n"], do_sample: false}'  # lm-eval's max_gen_toks: 256


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("after-training19")
    corpus = one_file_corpus(root / "a", seed=0)
    short = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
    return train_tiny(root / "run", data_dir, corpus, *short)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What `lmtrain.eval` got to: the model loads and the val datamodules it built (real ones:
    the functions are wrapped, not replaced)."""
    seen: dict[str, list[Any]] = {"load_model": [], "eval_datamodule": []}
    for name in seen:
        real = getattr(eval_module, name)

        def recording(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen[_name].append(args[0])
            return _real(*args, **kwargs)

        monkeypatch.setattr(eval_module, name, recording)
    return seen


def test_default_max_gen_toks_is_one_line_before_the_val_split(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, calls: dict[str, list[Any]]
) -> None:
    """It was lm-eval's AssertionError traceback, after the whole val split was scored."""
    write_task(tmp_path / "tasks", "my_gen", DOCS, gen_lines(DEFAULT_KWARGS))
    overrides = ["tasks=[my_gen]", f"include_path={tmp_path / 'tasks'}"]
    line = refused_eval(ckpt, tmp_path / "eval", data_dir, capsys, *overrides)
    assert "my_gen (max_gen_toks=256)" in line, line
    assert f"max_length={BLOCK_SIZE} (the data.block_size it was trained on)" in line, line
    assert f"set max_gen_toks below {BLOCK_SIZE} in the task's generation_kwargs" in line, line
    assert "larger max_length" in line, line
    assert calls["eval_datamodule"] == []  # the val split was never read


@pytest.mark.parametrize(
    ("generation_kwargs", "max_gen_toks"),
    [
        ('{until: ["\\n"], max_gen_toks: 16}', 16),  # exactly the context: no prompt room
        ('{until: ["\\n"], max_new_tokens: 40}', 40),  # an alias lm-eval reads too
    ],
)
def test_a_given_max_length_is_checked_before_the_model_loads(
    ckpt: Path,
    tmp_path: Path,
    data_dir: Path,
    capsys,
    calls: dict[str, list[Any]],
    generation_kwargs: str,
    max_gen_toks: int,
) -> None:
    write_task(tmp_path / "tasks", "my_gen", DOCS, gen_lines(generation_kwargs))
    overrides = ["tasks=[my_gen]", f"include_path={tmp_path / 'tasks'}", "max_length=16"]
    line = refused_eval(ckpt, tmp_path / "eval", data_dir, capsys, *overrides)
    assert f"my_gen (max_gen_toks={max_gen_toks})" in line, line
    assert "as many tokens as max_length=16 holds" in line, line
    assert calls["load_model"] == []


def test_a_max_gen_toks_that_leaves_room_runs(ckpt: Path, tmp_path: Path, data_dir: Path) -> None:
    """The bound is lm-eval's own: max_gen_toks one below the context generates and scores."""
    kwargs = f'{{until: ["\\n"], do_sample: false, max_gen_toks: {BLOCK_SIZE - 1}}}'
    write_task(tmp_path / "tasks", "my_gen", DOCS, gen_lines(kwargs))
    overrides = ["tasks=[my_gen]", f"include_path={tmp_path / 'tasks'}"]
    metrics = eval_tiny(ckpt, tmp_path / "eval", data_dir, *overrides)
    assert 0 <= metrics["lm_eval/my_gen/exact_match"] <= 1


def test_a_run_folder_without_last_ckpt_names_what_it_holds(ckpt: Path, tmp_path: Path) -> None:
    """It said to pass checkpoints/last.ckpt, a file that does not exist."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".last.ckpt.tmp.ckpt").write_bytes(b"")  # a save cut short
    for read in (lambda: resolve_model_path(str(run), tmp_path), lambda: load_model(run)):
        with pytest.raises(LMTrainError, match="holds no checkpoint yet") as err:
            read()
        assert "checkpoints/last.ckpt' once it is saved" in str(err.value), str(err.value)
        assert ".last.ckpt.tmp" not in str(err.value)

    (run / "checkpoints" / "best-step=2.ckpt").write_bytes(ckpt.read_bytes())
    with pytest.raises(LMTrainError) as err:
        resolve_model_path(str(run), tmp_path)
    message = str(err.value)
    assert "holds no last.ckpt: pass one of its checkpoints" in message, message
    assert "'best-step=2.ckpt'" in message and ".last.ckpt.tmp" not in message, message

    # With last.ckpt there, the line that names it stays.
    (run / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes())
    with pytest.raises(LMTrainError, match=r"pass its checkpoint, .*last\.ckpt"):
        resolve_model_path(str(run), tmp_path)


@pytest.mark.parametrize("map_location", ["meta", torch.device("meta"), {"cpu": "meta"}])
def test_map_location_meta_is_one_line_that_does_not_blame_the_file(
    ckpt: Path, map_location: Any
) -> None:
    with pytest.raises(LMTrainError) as err:
        CausalLMModule.load_from_checkpoint(ckpt, map_location=map_location)
    message = str(err.value)
    assert "loads no weights" in message and "map_location='cpu'" in message, message
    assert "does not fit" not in message and "\n" not in message, message
    module = CausalLMModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert next(module.parameters()).device.type == "cpu"
