"""`lmtrain.eval tasks=[...]` with input lm-eval would meet late or hide: a num_fewshot larger
than a task's few-shot documents, a task YAML whose `!function` cannot be imported or that does
not parse, and lm-eval keys set without tasks. Each is one `error:` line (or, for a valid key
set without tasks, one warning), before the model is loaded where lm-eval can tell.

The real lm-eval runs on tasks the tests write (a YAML and a local JSONL, `dataset_path: json`),
offline; the model is a tiny GPT-2 with a byte-level BPE tokenizer, which encodes any text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import lmtrain.eval as eval_module
from lmtrain.benchmarks import benchmark_settings, load_tasks, run_tasks
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import model_from_checkpoint, refused_eval, train_tiny
from tests.test_lm_eval import MC_LINES, write_task

BLOCK_SIZE = 32  # train_tiny's data.block_size: lm-eval's max_length here
DOCS = 12  # the multiple-choice task's documents (its test split)


def mc_docs(count: int) -> list[dict[str, Any]]:
    """`count` distinct multiple-choice questions (lm-eval compares documents by value)."""
    return [
        {"context": f"Line {i} says\n", "choices": [f"yes {i}.", f"no {i}."], "label": i % 2}
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("lm-eval-inputs")
    corpus = one_file_corpus(root / "a", seed=0)
    short = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
    return train_tiny(root / "run", data_dir, corpus, *short)


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths `lmtrain.eval` loads a model from: empty if it stopped before loading one."""
    loads: list[str] = []
    load_model = eval_module.load_model

    def recording_load_model(path: str, *args: Any, **kwargs: Any) -> Any:
        loads.append(path)
        return load_model(path, *args, **kwargs)

    monkeypatch.setattr(eval_module, "load_model", recording_load_model)
    return loads


def test_num_fewshot_beyond_a_tasks_documents_is_one_line_before_the_model_loads(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, model_loads: list[str]
) -> None:
    """It was lm-eval's `ValueError: Sample larger than population`, after the val split."""
    write_task(tmp_path / "tasks", "my_mc", mc_docs(DOCS), MC_LINES)
    line = refused_eval(
        ckpt,
        tmp_path / "eval",
        data_dir,
        capsys,
        "tasks=[my_mc]",
        f"include_path={tmp_path / 'tasks'}",
        "num_fewshot=50",
    )
    assert line.startswith("error: num_fewshot=50 is more than a task has few-shot"), line
    assert f"my_mc asks for 50, from the {DOCS} documents of its test split" in line, line
    assert f"pass num_fewshot={DOCS} or less" in line, line
    assert model_loads == []


@pytest.mark.parametrize(
    ("fewshot_split", "most"),
    [
        (None, DOCS),  # the test docs, the evaluated one not left out (lm-eval's rule)
        ("test", DOCS - 1),  # the split evaluated: the sampler leaves the evaluated doc out
    ],
)
def test_the_fewshot_bound_is_what_lm_eval_can_draw(
    ckpt: Path, tmp_path: Path, compose_cfg, fewshot_split: str | None, most: int
) -> None:
    """`most` examples run in lm-eval; one more is refused by load_tasks, and lm-eval itself
    (the check bypassed: the count changed after loading) fails on it, as one line too."""
    lines = MC_LINES + ([] if fewshot_split is None else [f"fewshot_split: {fewshot_split}"])
    write_task(tmp_path / "tasks", "my_mc", mc_docs(DOCS), lines)
    base = ["ckpt_path=unused", "tasks=[my_mc]", f"include_path={tmp_path / 'tasks'}", "limit=2"]
    too_many = benchmark_settings(compose_cfg(*base, f"num_fewshot={most + 1}", name="eval"))
    with pytest.raises(LMTrainError, match=rf"pass num_fewshot={most} or less"):
        load_tasks(too_many)

    settings = benchmark_settings(compose_cfg(*base, f"num_fewshot={most}", name="eval"))
    model, tokenizer, _ = model_from_checkpoint(ckpt)
    cpu = torch.device("cpu")
    metrics = run_tasks(load_tasks(settings), settings, model, tokenizer, cpu, BLOCK_SIZE, 0)
    assert 0 <= metrics["lm_eval/my_mc/acc"] <= 1

    with pytest.raises(LMTrainError, match=r"ask for more few-shot examples than a task can draw"):
        run_tasks(load_tasks(settings), too_many, model, tokenizer, cpu, BLOCK_SIZE, 0)


def test_copies_of_the_evaluated_document_are_one_line_when_lm_eval_samples(
    ckpt: Path, tmp_path: Path, compose_cfg
) -> None:
    """Three equal documents: one few-shot example fits the count, but the sampler leaves out
    every copy of the evaluated document and has none left (its ValueError was a traceback)."""
    write_task(tmp_path / "tasks", "copies", mc_docs(1) * 3, [*MC_LINES, "fewshot_split: test"])
    overrides = ["tasks=[copies]", f"include_path={tmp_path / 'tasks'}", "num_fewshot=1"]
    settings = benchmark_settings(compose_cfg("ckpt_path=unused", *overrides, name="eval"))
    tasks = load_tasks(settings)  # 1 of 3 documents, one left out: the count allows it
    model, tokenizer, _ = model_from_checkpoint(ckpt)
    with pytest.raises(LMTrainError) as err:
        run_tasks(tasks, settings, model, tokenizer, torch.device("cpu"), BLOCK_SIZE, 0)
    message = str(err.value)
    assert "tasks=['copies'] ask for more few-shot examples" in message, message
    assert "num_fewshot=1" in message and "\n" not in message, message


@pytest.mark.parametrize(
    ("function", "helpers", "error"),
    [
        (
            "lmtrain_missing_helpers.nothere",
            None,
            "ImportError: Cannot import module 'lmtrain_missing_helpers' for function 'nothere'",
        ),
        ("helpers.nothere", "def keep(docs):\n    return docs\n", "AttributeError: Module "),
    ],
)
def test_a_function_a_task_yaml_cannot_import_is_one_line_before_the_model_loads(
    ckpt: Path,
    tmp_path: Path,
    data_dir: Path,
    capsys,
    model_loads: list[str],
    function: str,
    helpers: str | None,
    error: str,
) -> None:
    tasks = tmp_path / "tasks"
    write_task(tasks, "my_fn", mc_docs(DOCS), [*MC_LINES, f"process_docs: !function {function}"])
    if helpers is not None:
        (tasks / "helpers.py").write_text(helpers)
    line = refused_eval(
        ckpt, tmp_path / "eval", data_dir, capsys, "tasks=[my_fn]", f"include_path={tasks}"
    )
    assert line.startswith(f"error: tasks=my_fn: its task YAML {tasks / 'my_fn.yaml'}"), line
    assert error in line and "fix the" in line, line
    assert model_loads == []


def test_a_task_yaml_that_does_not_parse_is_named_with_the_parsers_message(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    """lm-eval skips such a YAML while indexing: its task read as unknown, nothing more. A
    valid YAML with lm-eval's `!function` tag beside it is not named."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "my_bad.yaml").write_text("task: my_bad\n  dataset_path: [json\n")
    write_task(tasks, "my_good", mc_docs(DOCS), [*MC_LINES, "process_docs: !function helpers.keep"])
    (tasks / "helpers.py").write_text("def keep(docs):\n    return docs\n")
    line = refused_eval(
        ckpt, tmp_path / "eval", data_dir, capsys, "tasks=[my_bad]", f"include_path={tasks}"
    )
    assert "tasks= names tasks lm-eval does not know ('my_bad'" in line, line
    parse_error = "my_bad.yaml (line 2, column 15: mapping values are not allowed here)"
    # Only the YAML that does not parse: the closing parenthesis ends the list of files.
    assert f"YAMLs lm-eval skipped, as they do not parse ({parse_error}): fix those YAMLs" in line


BAD_KEYS = ["num_fewshot=-1", "limit=-1", "batch_size=0"]


def test_bad_lm_eval_keys_without_tasks_are_refused_as_with_tasks(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, compose_cfg
) -> None:
    """tasks=[] (the default) ran the val split and exited 0, the bad values unread."""
    with pytest.raises(LMTrainError) as with_tasks:
        benchmark_settings(compose_cfg("ckpt_path=unused", "tasks=[my_mc]", *BAD_KEYS, name="eval"))
    assert str(with_tasks.value).startswith("3 settings need a change")
    line = refused_eval(ckpt, tmp_path / "eval", data_dir, capsys, *BAD_KEYS)
    assert line == f"error: {with_tasks.value}"


@pytest.mark.parametrize("value", ["foo", "0", "2.5", "true"])
def test_a_bad_lm_eval_batch_size_names_auto_among_what_to_pass(compose_cfg, value: str) -> None:
    """The line said only "pass a whole number", though the docs list auto too."""
    cfg = compose_cfg("ckpt_path=u", "tasks=[my_mc]", f"batch_size={value}", name="eval")
    with pytest.raises(LMTrainError) as refused:
        benchmark_settings(cfg)
    assert str(refused.value) == (
        f"batch_size={cfg.batch_size!r} is neither a whole number of at least 1 nor auto: pass "
        "batch_size=8, or batch_size=auto (lm-eval finds the largest that fits)"
    )
    for fine in ("auto", "1", "16"):
        assert (
            benchmark_settings(compose_cfg("ckpt_path=u", f"batch_size={fine}", name="eval"))
            is None
        )


def test_lm_eval_keys_set_without_tasks_are_one_warning(
    compose_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert benchmark_settings(compose_cfg("ckpt_path=unused", name="eval")) is None
        assert benchmark_settings(compose_cfg("ckpt_path=u", "batch_size=1", name="eval")) is None
    assert not caplog.records  # the defaults, typed or not, say nothing

    with caplog.at_level(logging.WARNING):
        cfg = compose_cfg("ckpt_path=unused", "num_fewshot=5", "limit=0.5", name="eval")
        assert benchmark_settings(cfg) is None
    assert [r.getMessage() for r in caplog.records] == [
        "num_fewshot=5, limit=0.5 have no effect without tasks=: name lm-eval tasks "
        "(tasks=[hellaswag]) to use them, or leave them out"
    ]
