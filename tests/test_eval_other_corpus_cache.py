"""`lmtrain.eval ... data=<name>`: the corpus is read with the model's own tokenizer, which each
run saves in its own folder. The token cache is keyed by that tokenizer's files, not by where
they lie, so a second eval of the model on the corpus reuses the first one's cache (every run
tokenized the whole corpus again and left another copy), and the same holds for a training run's
pretrained tokenizer folder copied elsewhere, while a tokenizer whose files differ gets a cache of
its own. A `data.tokenizer...` override typed with `data=<name>` is refused in one line, as it is
on the model's own data config (red team fixEval15, 2026-12-05).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

BUILT, REUSED = "Building token cache", "Reusing token cache"
SHORT = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]


@pytest.fixture(scope="module")
def char_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A char model trained by the CLI, and another corpus of the same characters (its lines in
    reverse order), which its tokenizer encodes."""
    root = tmp_path_factory.mktemp("other-corpus")
    corpus = one_file_corpus(root / "a", seed=0)
    other = root / "other.txt"
    other.write_text("".join(reversed(corpus.read_text().splitlines(keepends=True))))
    run = root / "run"
    data_dir = root / "data"
    overrides = [*SHORT, "logger=none", f"hydra.run.dir={run}"]
    result = run_cli("train", *tiny_cli(root, data_dir, *overrides, corpus=corpus))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"ckpt": run / "checkpoints" / "last.ckpt", "other": other, "data": data_dir}


def caches(cache_dir: Path) -> list[str]:
    """The cache folders under `cache_dir` (not their lock files)."""
    return sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock")


def eval_other(char_run: dict[str, Path], run: Path, data_dir: Path, *overrides: str):
    return run_cli(
        "eval",
        f"ckpt_path={char_run['ckpt']}",
        "data=text_files",
        f"data.source.path={char_run['other']}",
        "data.block_size=32",
        f"paths.data_dir={data_dir}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run}",
        *overrides,
    )


def test_a_second_eval_on_another_corpus_reuses_the_first_ones_cache(
    char_run: dict[str, Path], tmp_path: Path
) -> None:
    """Two evals of one model on one corpus, each in its own run folder (the default folder is
    timestamped): the second reuses the cache the first built, and reports the same numbers."""
    data_dir = tmp_path / "data"
    outputs, losses = [], []
    for name in ("first", "second"):
        result = eval_other(char_run, tmp_path / name, data_dir)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        outputs.append(output)
        losses.append(json.loads((tmp_path / name / "metrics.json").read_text())["val/loss"])
    assert BUILT in outputs[0], outputs[0][-3000:]
    assert REUSED in outputs[1] and BUILT not in outputs[1], outputs[1][-3000:]
    assert len(caches(data_dir / "cache")) == 1, caches(data_dir / "cache")
    assert losses[0] == losses[1]


def test_a_copied_tokenizer_folder_reuses_the_cache_and_an_edited_one_does_not(
    char_run: dict[str, Path], tmp_path: Path
) -> None:
    """Training with `data.tokenizer.kind=pretrained`: the same files in another folder (the
    first one moved, or copied) reuse the first run's cache; a copy with two ids swapped is
    another tokenizer, and gets a cache of its own."""
    cache_dir = char_run["data"] / "cache"
    source = cache_dir / caches(cache_dir)[0] / "tokenizer"  # the char model's tokenizer
    copies = {name: shutil.copytree(source, tmp_path / name) for name in ("one", "two", "edited")}
    full = json.loads((copies["edited"] / "tokenizer.json").read_text())
    vocab = full["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (copies["edited"] / "tokenizer.json").write_text(json.dumps(full))

    data_dir, outputs = tmp_path / "data", {}
    for name, folder in copies.items():
        overrides = [*SHORT, "logger=none", f"hydra.run.dir={tmp_path / f'run-{name}'}"]
        pretrained = ["data.tokenizer.kind=pretrained", f"data.tokenizer.name={folder}"]
        result = run_cli(
            "train",
            *tiny_cli(tmp_path, data_dir, *overrides, *pretrained, corpus=char_run["other"]),
        )
        outputs[name] = result.stdout + result.stderr
        assert result.returncode == 0, outputs[name][-3000:]
    assert BUILT in outputs["one"], outputs["one"][-3000:]
    assert REUSED in outputs["two"] and BUILT not in outputs["two"], outputs["two"][-3000:]
    assert BUILT in outputs["edited"], outputs["edited"][-3000:]
    assert len(caches(data_dir / "cache")) == 2, caches(data_dir / "cache")


@pytest.mark.parametrize(
    ("typed", "named"),
    [
        (
            ["data.tokenizer.kind=bpe", "data.tokenizer.vocab_size=999"],
            "data.tokenizer.kind='bpe', data.tokenizer.vocab_size=999",
        ),
        (["++data.tokenizer.name=gpt2"], "data.tokenizer.name='gpt2'"),
    ],
)
def test_a_tokenizer_setting_typed_with_another_corpus_is_one_line(
    char_run: dict[str, Path], tmp_path: Path, typed: list[str], named: str
) -> None:
    """eval reads any corpus with the model's own tokenizer: a `data.tokenizer...` override
    with `data=<name>` was dropped without a word (rc 0, the char tokenizer used), and is now
    refused before anything is read, in the line the model's own data config gives."""
    result = eval_other(char_run, tmp_path / "eval", tmp_path / "data", *typed)
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    line = assert_one_line_error(result)
    expected = f"{named} cannot apply: eval reads text with the model's own tokenizer; drop it"
    assert line == f"error: {expected}", line
    assert not (tmp_path / "eval" / "metrics.json").exists()
    assert not (tmp_path / "data" / "cache").exists()
