"""`lmtrain.eval tasks=[...]`: lm-evaluation-harness on the model in memory, offline.

No benchmark data can be downloaded here, so the tests write their own lm-eval tasks (a YAML and
a local JSONL each, `dataset_path: json`): a multiple-choice task built from the val text, and a
`loglikelihood_rolling` task over exactly the text that our val/bpb scores.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerBase

from lmtrain.benchmarks import (
    TRUNCATING,
    benchmark_settings,
    load_tasks,
    run_tasks,
    tasks_context,
)
from lmtrain.errors import LMTrainError
from tests.helpers.assertions import assert_one_line_error, one_error_line
from tests.helpers.cli import run_cli, wandb_summary
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import eval_tiny, export_tiny, model_from_checkpoint, train_tiny

BLOCK_SIZE = 32  # train_tiny's data.block_size: our val windows and lm-eval's max_length
CHOICES = 4  # chance on the multiple-choice task: 1 / CHOICES
MC_TASK, TEXT_TASK = "lmtrain_sentences", "lmtrain_val_text"
TASKS = f"tasks=[{MC_TASK},{TEXT_TASK}]"


def val_text(corpus: Path) -> str:
    """The val split of a one-file corpus: its last 10% of characters (text_files' default)."""
    text = corpus.read_text()
    return text[int(len(text) * 0.9) :]


def scored_text(corpus: Path, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text val/bpb scores: the val split's tokens, an end-of-text id after them, cut into
    back-to-back windows of BLOCK_SIZE + 1 tokens; every token but the first is a target.

    lm-eval's rolling windows with max_length=BLOCK_SIZE predict this text from the same
    contexts, the first target from the end-of-text id (lm-eval's prefix) instead of the token
    before it.
    """
    stream = [*tokenizer(val_text(corpus), add_special_tokens=False).input_ids]
    stream.append(tokenizer.eos_token_id)
    windows = (len(stream) - 1) // BLOCK_SIZE
    targets = stream[1 : windows * BLOCK_SIZE + 1]
    assert tokenizer.eos_token_id not in targets  # else ours scores it and lm-eval does not
    text = tokenizer.decode(targets)
    assert tokenizer(text).input_ids == targets  # lm-eval reads the same tokens back
    return text


def sentence_docs(corpus: Path, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Multiple choice on held-out sentences: after a val line, which line comes next?

    The answer is the real next line; the distractors are its words shuffled (a lowercase word
    first, the capitalized one and the period in the middle). Only shuffles with as many tokens
    as the answer are used, so a model that learned nothing (near-uniform logits) is at chance.
    """
    rng = random.Random(0)
    lines = val_text(corpus).splitlines()[1:]  # the first line starts mid-sentence
    docs = []
    for before, line in itertools.pairwise(lines):
        n_tokens = len(tokenizer(line).input_ids)
        words, shuffles = line.split(" "), set()
        for _ in range(200):
            shuffled = rng.sample(words, len(words))
            if shuffled[0] != words[0] and len(tokenizer(" ".join(shuffled)).input_ids) == n_tokens:
                shuffles.add(" ".join(shuffled))
        if len(shuffles) >= CHOICES - 1:
            choices = sorted(shuffles)[: CHOICES - 1]
            label = rng.randrange(CHOICES)
            choices.insert(label, line)
            docs.append({"context": before + "\n", "choices": choices, "label": label})
    assert len(docs) >= 25, len(docs)
    return docs


def write_tasks(folder: Path, corpus: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Both tasks as lm-eval task YAMLs over local JSONL files, in `folder` (include_path)."""
    write_task(folder, MC_TASK, sentence_docs(corpus, tokenizer), MC_LINES)
    write_task(folder, TEXT_TASK, [{"text": scored_text(corpus, tokenizer)}], TEXT_LINES)
    return folder


def write_task(folder: Path, name: str, docs: list[dict], lines: list[str]) -> None:
    """`folder/<name>.yaml`, an lm-eval task over `folder/<name>.jsonl` (the docs)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    head = [f"task: {name}", "dataset_path: json", "test_split: test"]
    head.append(f"dataset_kwargs: {{data_files: {{test: {data}}}}}")
    (folder / f"{name}.yaml").write_text("\n".join(head + lines) + "\n")


MC_LINES = [
    "output_type: multiple_choice",
    'doc_to_text: "{{context}}"',
    'doc_to_choice: "{{choices}}"',
    'doc_to_target: "{{label}}"',
    'target_delimiter: ""',  # the choice follows the newline that ends the context
    "metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]",
]
TEXT_LINES = [
    "output_type: loglikelihood_rolling",
    'doc_to_text: ""',
    'doc_to_target: "{{text}}"',
    "metric_list:",
    "  - {metric: bits_per_byte, aggregation: bits_per_byte, higher_is_better: false}",
    "  - {metric: word_perplexity, aggregation: weighted_perplexity, higher_is_better: false}",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm-eval")
    corpus = one_file_corpus(root / "a", seed=0)
    ckpt = train_tiny(root / "run", data_dir, corpus, "trainer.max_steps=40")
    _, tokenizer, _ = model_from_checkpoint(ckpt)
    return {
        "ckpt": ckpt,
        "export": export_tiny(ckpt, root / "hf", data_dir),
        "tasks": write_tasks(root / "tasks", corpus, tokenizer),
    }


@pytest.fixture(scope="module")
def ckpt_metrics(
    model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> dict[str, float]:
    out = tmp_path_factory.mktemp("eval-ckpt")
    return eval_tiny(model["ckpt"], out, data_dir, TASKS, f"include_path={model['tasks']}")


def test_trained_model_beats_chance_and_bits_per_byte_agree(
    ckpt_metrics: dict[str, float],
) -> None:
    assert ckpt_metrics[f"lm_eval/{MC_TASK}/acc"] >= 0.6 > 1 / CHOICES
    lm_eval_bpb = ckpt_metrics[f"lm_eval/{TEXT_TASK}/bits_per_byte"]
    assert lm_eval_bpb == pytest.approx(ckpt_metrics["val/bpb"], rel=0.01)
    assert 0 < ckpt_metrics["val/bpb"] < 4  # it learned the corpus: not 8 bits a byte


def test_untrained_model_is_at_chance(
    model: dict[str, Path], compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same architecture, freshly initialized, picks at chance, so the
    distractors cannot be told apart by their tokens alone. On every question: limit=1.0 is the
    share of all of them (lm-eval itself reads a float of 1 or more as a count)."""
    import lm_eval

    counts: dict[str, dict[str, int]] = {}

    def counting_evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
        results = simple_evaluate(*args, **kwargs)
        counts.update(results["n-samples"])
        return results

    simple_evaluate = lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate", counting_evaluate)
    hf_model, tokenizer, _ = model_from_checkpoint(model["ckpt"])
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(hf_model.config)
    overrides = [f"tasks=[{MC_TASK}]", f"include_path={model['tasks']}", "limit=1.0"]
    settings = benchmark_settings(compose_cfg("ckpt_path=unused", *overrides, name="eval"))
    tasks = load_tasks(settings)
    cpu = torch.device("cpu")
    metrics = run_tasks(tasks, settings, untrained, tokenizer, cpu, BLOCK_SIZE, seed=0)
    assert metrics[f"lm_eval/{MC_TASK}/acc"] < 0.45
    questions = len((model["tasks"] / f"{MC_TASK}.jsonl").read_text().splitlines())
    assert counts[MC_TASK] == {"original": questions, "effective": questions}


def test_export_folder_from_the_cli_logs_to_wandb(
    model: dict[str, Path], ckpt_metrics: dict[str, float], tmp_path: Path, data_dir: Path
) -> None:
    """An exported folder gives the checkpoint's scores; they reach metrics.json and W&B."""
    run_dir = tmp_path / "eval"
    result = run_cli(
        "eval",
        f"ckpt_path={model['export']}",
        TASKS,
        f"include_path={model['tasks']}",
        "logger=wandb",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    # lm-eval's log: its INFO lines off, one truncation warning (the sentences task's prompts
    # are longer than the 32 trained tokens) instead of one per request.
    assert output.count(TRUNCATING) == 1 and "Passed an already-initialized" not in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = wandb_summary(run_dir)
    assert summary["state"] == "finished", summary
    for key in (f"lm_eval/{MC_TASK}/acc", f"lm_eval/{TEXT_TASK}/bits_per_byte", "val/bpb"):
        assert metrics[key] == pytest.approx(ckpt_metrics[key], rel=1e-5), key
        assert summary["summary"][key] == pytest.approx(metrics[key]), key


def test_unknown_task_is_one_line_with_near_matches(
    model: dict[str, Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    with pytest.raises(SystemExit):
        eval_tiny(
            model["export"],
            tmp_path / "eval",
            data_dir,
            "tasks=[hellaswg,lmtrain_sentence,arc_easy]",
            f"include_path={model['tasks']}",
        )
    line = one_error_line(capsys.readouterr().err)
    assert "'hellaswg' (near: hellaswag" in line, line
    assert f"'lmtrain_sentence' (near: {MC_TASK}" in line, line
    assert "arc_easy" not in line and "include_path=" in line, line
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_bad_settings_are_one_line(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "ckpt_path=unused",
        "tasks=[hellaswag]",
        "num_fewshot=-1",
        "limit=0",
        "batch_size=big",
        f"include_path={tmp_path / 'nowhere'}",
        name="eval",
    )
    with pytest.raises(LMTrainError) as err:
        benchmark_settings(cfg)
    message = str(err.value)
    assert message.startswith("4 settings need a change"), message
    for fragment in ("num_fewshot=-1", "limit=0", "batch_size='big'", "is not a folder"):
        assert fragment in message, message

    # A context longer than the model's is refused as soon as the model is known.
    cfg = compose_cfg("ckpt_path=unused", "tasks=[hellaswag]", "max_length=128", name="eval")
    settings = benchmark_settings(cfg)
    with pytest.raises(LMTrainError, match=r"max_length=128 is longer than the model's context"):
        tasks_context(settings, GPT2Config(n_positions=64), {"data": {"block_size": 32}})
    assert tasks_context(settings, GPT2Config(n_positions=256), {}) == 128
    settings.max_length = None  # the trained block size, else the model's context
    assert tasks_context(settings, GPT2Config(n_positions=64), {"data": {"block_size": 32}}) == 32
    assert tasks_context(settings, GPT2Config(n_positions=64), {}) == 64


def test_missing_lm_eval_is_one_line_with_the_install_command(
    model: dict[str, Path], tmp_path: Path
) -> None:
    """lm_eval made unimportable for real: a package of that name first on the path raises."""
    fake = tmp_path / "site" / "lm_eval"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'lm_eval'\")\n")
    path = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))
    result = run_cli(
        "eval",
        f"ckpt_path={model['export']}",
        "tasks=[hellaswag]",
        f"hydra.run.dir={tmp_path / 'eval'}",
        env={"PYTHONPATH": path},
    )
    assert_one_line_error(result, "tasks=['hellaswag']", "not installed", "pip install -e .[eval]")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_task_data_that_cannot_be_downloaded_is_one_line(
    model: dict[str, Path], tmp_path: Path
) -> None:
    """A real task offline, with an empty datasets cache: one line before the model loads."""
    result = run_cli(
        "eval",
        f"ckpt_path={model['export']}",
        "tasks=[arc_easy]",
        f"hydra.run.dir={tmp_path / 'eval'}",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert_one_line_error(result, "tasks=arc_easy needs its data", "HF_HUB_OFFLINE")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_characters_a_char_tokenizer_cannot_encode_are_one_line(
    tmp_path: Path, data_dir: Path, capsys
) -> None:
    """A char-level model (a Shakespeare experiment) on a task with characters it never saw."""
    corpus = one_file_corpus(tmp_path / "a", seed=0)
    short = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
    ckpt = train_tiny(tmp_path / "run", data_dir, corpus, "data.tokenizer.kind=char", *short)
    doc = {"context": "The cat\n", "choices": ["sat.", "Über."], "label": 0}
    write_task(tmp_path / "tasks", "umlauts", [doc], MC_LINES)
    with pytest.raises(SystemExit):
        eval_tiny(
            ckpt,
            tmp_path / "eval",
            data_dir,
            "tasks=[umlauts]",
            f"include_path={tmp_path / 'tasks'}",
        )
    line = one_error_line(capsys.readouterr().err)
    assert "tasks=['umlauts'] hold characters" in line and "kind=bpe" in line, line
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_an_answer_longer_than_max_length_is_one_line(
    model: dict[str, Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    # lm-eval's bare `assert len(continuation_enc) <= self.max_length` was a traceback; the
    # default max_length (the trained block size) meets it on real tasks with small blocks.
    doc = {"context": "The cat\n", "choices": ["sat " * 12, "ran " * 12], "label": 0}
    write_task(tmp_path / "tasks", "long_answers", [doc], MC_LINES)
    with pytest.raises(SystemExit):
        eval_tiny(
            model["ckpt"],
            tmp_path / "eval",
            data_dir,
            "tasks=[long_answers]",
            f"include_path={tmp_path / 'tasks'}",
            "max_length=4",
        )
    line = one_error_line(capsys.readouterr().err)
    assert "tasks=['long_answers'] hold an answer longer than max_length=4 tokens" in line, line
    assert not (tmp_path / "eval" / "metrics.json").exists()
