"""`lmtrain.eval` on what a model brings with it (red team rev_after22).

- The folders and URLs of a stored run config's data source (Tiny Shakespeare's download_dir and
  url, a Hugging Face dataset's cache_dir) are the training machine's, or whoever edited the
  file: eval downloads and caches under its own `paths`, from the project's URL.
- A special token's spelling in an lm-eval task's text is text, as in training: a .ckpt and its
  export score the same.
- A block size longer than a trained model's context names the value to pass.
- A task with characters a char tokenizer lacks is refused before the val split, naming the task
  and the characters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lmtrain.data.shakespeare import TINY_SHAKESPEARE_URL
from tests.helpers.cli import run_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import (
    eval_tiny,
    export_tiny,
    model_from_checkpoint,
    refused_eval,
    train_tiny,
)
from tests.test_lm_eval import TEXT_LINES
from tests.test_lm_eval import write_task as write_docs_task

SHORT = ("trainer.max_steps=4", "trainer.val_check_interval=4", "callbacks.text_samples=null")
# A generate_until task: lm-eval adds the end-of-text spelling to its stop sequences.
GENERATE_LINES = [
    "output_type: generate_until",
    'doc_to_text: "{{text}}"',
    'doc_to_target: "{{text}}"',
    'generation_kwargs: {until: ["e"], max_gen_toks: 4}',
    "metric_list:",
    "  - {metric: exact_match, aggregation: mean, higher_is_better: true}",
]


def write_task(folder: Path, name: str, texts: list[str], lines: list[str] = TEXT_LINES) -> Path:
    """`folder/<name>.yaml`: a loglikelihood_rolling task (or one of `lines`) over `texts`
    (include_path=folder)."""
    write_docs_task(folder, name, [{"text": text} for text in texts], lines)
    return folder


@pytest.fixture(scope="module")
def char_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """A tiny char-level model: its last.ckpt, its corpus and its export folder."""
    root = tmp_path_factory.mktemp("char")
    corpus = one_file_corpus(root / "corpus", seed=0)
    ckpt = train_tiny(root / "run", data_dir, corpus, "data.tokenizer.kind=char", *SHORT)
    export = root / "export"
    export_tiny(ckpt, export, data_dir)
    return {"ckpt": ckpt, "corpus": corpus, "export": export}


class Listener:
    """A local HTTP server that records every path asked for and answers 404."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.paths.append(self.path)
                self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.server.shutdown()
    served.server.server_close()


def edited_export(export: Path, copy: Path, source: dict[str, Any]) -> Path:
    """A copy of `export` whose stored run config trains on `source`."""
    copy.mkdir(parents=True)
    for file in export.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    record = json.loads((copy / "lmtrain.json").read_text())
    record["run_config"]["data"]["source"] = source
    (copy / "lmtrain.json").write_text(json.dumps(record))
    return copy


def test_stored_download_folder_and_url_are_not_used(
    char_model: dict[str, Path], tmp_path: Path, data_dir: Path, listener: Listener, capsys
) -> None:
    elsewhere = tmp_path / "elsewhere" / "deep" / "dir"
    source = {
        "_target_": "lmtrain.data.shakespeare.ShakespeareSource",
        "path": None,
        "val_fraction": 0.1,
        "download_dir": str(elsewhere),
        "url": f"{listener.url}/leak?who=evaluator",
    }
    model = edited_export(char_model["export"], tmp_path / "model", source)
    # The project's URL would go to the internet: this command's own mirror is typed here.
    line = refused_eval(
        model, tmp_path / "eval", data_dir, capsys, f"+data.source.url={listener.url}/typed"
    )
    assert listener.paths == ["/typed"], listener.paths  # never the stored URL
    assert "downloading Tiny Shakespeare" in line and "/typed" in line, line
    assert "set +data.source.path=<local copy" in line, line  # as eval takes it, with +
    assert not (tmp_path / "elsewhere").exists()  # no folder tree of the stored config's
    assert (data_dir / "shakespeare").is_dir()  # this command's paths.data_dir, as configured


def test_stored_url_is_replaced_by_the_projects(data_dir: Path) -> None:
    from lmtrain.data.stored_source import this_machine_source

    stored = {
        "_target_": "lmtrain.data.shakespeare.ShakespeareSource",
        "path": None,
        "download_dir": "/home/trainer/data/shakespeare",
        "url": "http://127.0.0.1:9/leak",
        "timeout_s": 1e9,
    }
    ours = this_machine_source(stored, data_dir)
    assert ours["url"] == TINY_SHAKESPEARE_URL and ours["timeout_s"] == 60.0
    assert ours["download_dir"] == str(data_dir / "shakespeare")


def test_a_download_folder_that_cannot_be_made_is_one_line(
    char_model: dict[str, Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    source = {
        "_target_": "lmtrain.data.shakespeare.ShakespeareSource",
        "path": None,
        "download_dir": "/home/trainer/data/shakespeare",
    }
    model = edited_export(char_model["export"], tmp_path / "model", source)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = refused_eval(
        model, tmp_path / "eval", data_dir, capsys, f"+data.source.download_dir={blocker}/x"
    )
    assert f"+data.source.download_dir='{blocker}/x' cannot be created" in line, line


def test_stored_datasets_cache_dir_is_not_used(char_model: dict[str, Path], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = char_model["corpus"].read_text().splitlines()
    corpus.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines if line))
    elsewhere = tmp_path / "elsewhere" / "hf"
    source = {
        "_target_": "lmtrain.data.hf_dataset.HFDatasetSource",
        "path": str(corpus),
        "val_fraction": 0.5,
        "cache_dir": str(elsewhere),
        "load_kwargs": {"cache_dir": str(elsewhere / "kw")},
    }
    model = edited_export(char_model["export"], tmp_path / "model", source)
    mine = tmp_path / "datasets"
    out = run_cli(
        "eval",
        f"ckpt_path={model}",
        f"paths.root_dir={tmp_path / 'root'}",
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(mine)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "elsewhere").exists()
    assert mine.is_dir()  # this machine's datasets cache


def test_a_special_tokens_spelling_in_a_task_scores_the_same_from_ckpt_and_export(
    tmp_path: Path, data_dir: Path
) -> None:
    corpus = one_file_corpus(tmp_path / "corpus", seed=1)
    ckpt = train_tiny(tmp_path / "run", data_dir, corpus, *SHORT)  # byte-level BPE
    export = tmp_path / "export"
    export_tiny(ckpt, export, data_dir)
    text = "the king<|endoftext|>the queen café crown. "
    tasks = write_task(tmp_path / "tasks", "sppl", [text * k for k in (2, 3, 4)])
    scores = []
    for name, model in (("ckpt", ckpt), ("export", export)):
        metrics = eval_tiny(
            model, tmp_path / f"eval-{name}", data_dir, "tasks=[sppl]", f"include_path={tasks}"
        )
        scores.append((metrics["val/loss"], metrics["lm_eval/sppl/bits_per_byte"]))
    assert scores[0][0] == pytest.approx(scores[1][0], rel=1e-5)  # the same weights
    assert scores[0][1] == pytest.approx(scores[1][1], rel=1e-5), scores


def test_a_block_longer_than_a_trained_models_context_names_the_value(
    char_model: dict[str, Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    _, _, run_config = model_from_checkpoint(char_model["ckpt"])
    limit = 64  # tests.helpers.compose.TINY_GPT2's n_positions
    assert run_config["data"]["block_size"] <= limit
    corpus = f"data.source.path={char_model['corpus']}"
    block = f"data.block_size={limit + 1}"
    line = refused_eval(
        char_model["ckpt"], tmp_path / "a", data_dir, capsys, "data=text_files", corpus, block
    )
    assert f"pass data.block_size={limit} or less" in line and "raise" not in line, line
    line = refused_eval(char_model["ckpt"], tmp_path / "b", data_dir, capsys, f"+{block}")
    assert f"pass +data.block_size={limit} or less" in line and "raise" not in line, line


def test_task_characters_a_char_tokenizer_lacks_are_refused_before_the_val_split(
    char_model: dict[str, Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    tasks = write_task(tmp_path / "tasks", "snowmen", ["plain words", "a snowman \u2603 here"])
    # A corpus that is not there: refused before the val split, the task is the one named.
    missing = f"data.source.path={tmp_path / 'no-such-corpus.txt'}"
    line = refused_eval(
        char_model["ckpt"],
        tmp_path / "eval",
        data_dir,
        capsys,
        "tasks=[snowmen]",
        f"include_path={tasks}",
        "data=text_files",
        "data.block_size=32",
        missing,
    )
    assert "tasks=['snowmen'] hold characters" in line and "in snowmen" in line, line
    assert "'\u2603'" in line and "a snowman" in line, line


def test_a_generate_until_task_runs_on_a_char_model_from_ckpt_and_export(
    char_model: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """Review rev_diff22b: a char vocabulary cannot spell `<|endoftext|>`, which lm-eval encodes
    as a stop sequence: read as text, every generate_until task failed after the val split."""
    words = char_model["corpus"].read_text().split()[:6]
    tasks = write_task(tmp_path / "tasks", "gen", words, GENERATE_LINES)
    for name in ("ckpt", "export"):
        metrics = eval_tiny(
            char_model[name], tmp_path / name, data_dir, "tasks=[gen]", f"include_path={tasks}"
        )
        assert 0.0 <= metrics["lm_eval/gen/exact_match"] <= 1.0


def test_the_few_shot_delimiter_of_a_task_without_examples_is_not_checked(
    tmp_path: Path, data_dir: Path
) -> None:
    """Review rev_diff22b: a char model whose corpus has no newline was refused on the few-shot
    delimiter ("\\n\\n") of a task with no few-shot examples, which lm-eval never encodes."""
    corpus = tmp_path / "corpus" / "line.txt"
    corpus.parent.mkdir()
    corpus.write_text("the king and the queen of the realm " * 300)  # one line, no newline
    ckpt = train_tiny(tmp_path / "run", data_dir, corpus, "data.tokenizer.kind=char", *SHORT)
    tasks = write_task(tmp_path / "tasks", "roll", ["the king", "the queen and the realm"])
    metrics = eval_tiny(ckpt, tmp_path / "eval", data_dir, "tasks=[roll]", f"include_path={tasks}")
    assert metrics["lm_eval/roll/bits_per_byte"] > 0


def test_a_verified_download_where_the_run_config_says_is_read_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rev_diff22b: eval of a Tiny Shakespeare run downloaded again under its own
    paths.data_dir, offline a failure, although the verified file lay where training put it."""
    import hashlib

    from lmtrain.data import stored_source

    trained = tmp_path / "trainer" / "shakespeare"
    trained.mkdir(parents=True)
    (trained / "input.txt").write_text("First Citizen:\nBefore we proceed any further.\n")
    sha = hashlib.sha256((trained / "input.txt").read_bytes()).hexdigest()
    monkeypatch.setattr(stored_source, "TINY_SHAKESPEARE_SHA256", sha)  # this text is the one
    source = {"_target_": "lmtrain.data.shakespeare.ShakespeareSource", "path": None}
    ours = stored_source.this_machine_source({**source, "download_dir": str(trained)}, tmp_path)
    assert ours["download_dir"] == str(trained)
    (trained / "input.txt").write_text("another text")  # not the verified file: not read there
    ours = stored_source.this_machine_source({**source, "download_dir": str(trained)}, tmp_path)
    assert ours["download_dir"] == str(tmp_path / "shakespeare")
