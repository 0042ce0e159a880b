"""Nodes started by their own command lines (torchrun, or NODE_RANK by hand) with other settings
stop at setup with one line that names the keys and the ranks: a `trainer.max_steps` typed on
one node hung the run after a step, another `data.batch_size` trained with exit 0 on numbers
the run misreported, another model size ended in torch's traceback. Settings a node may have
of its own (its data folder, its copy of the corpus, its tokenizing workers) still train."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain.utils.rank_settings import rank_settings, settings_differ
from tests.helpers.corpora import one_file_corpus
from tests.test_multinode import node_overrides, two_nodes

# Both nodes: the code before this check hung in a collective only one rank made; it fails in 90 s
# rather than ddp_cpu's 300, and the refusal comes well before that.
SHORT_TIMEOUT = "trainer.strategy.timeout.seconds=90"


def refused(results: list, run: Path) -> str:
    """The one `error:` line of a run both nodes left non-zero, before any checkpoint."""
    assert all(r.returncode != 0 for r in results), [r.stdout[-2000:] for r in results]
    errors = [line for r in results for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, [r.stdout[-3000:] for r in results]
    # No traceback of the training process (torchrun prints its own for any child's exit 1).
    frames = [line for r in results for line in r.stdout.splitlines() if 'File "' in line]
    assert not [f for f in frames if "/lmtrain/" in f or "/lightning/" in f], frames
    assert not any("Error executing job" in r.stdout for r in results)
    assert not (run / "checkpoints").exists()
    return errors[0]


@pytest.mark.slow
def test_a_node_with_other_max_steps_stops_the_run_at_setup(tmp_path: Path) -> None:
    one_file_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    nodes = [
        node_overrides(tmp_path, 0, run, SHORT_TIMEOUT),
        node_overrides(tmp_path, 1, run, SHORT_TIMEOUT, "trainer.max_steps=6"),
    ]
    start = time.monotonic()
    line = refused(two_nodes("torchrun", nodes, tmp_path), run)
    assert time.monotonic() - start < 75, "the ranks waited for a collective"
    assert "the run's settings differ between ranks: trainer.max_steps (rank 0: 4, rank 1: 6)" in (
        line
    )
    assert "give every node the same command line" in line


@pytest.mark.slow
def test_a_node_with_other_batch_and_model_size_names_each_key(tmp_path: Path) -> None:
    one_file_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    other = ("data.batch_size=4", "model.config.n_embd=64")
    nodes = [node_overrides(tmp_path, 0, run), node_overrides(tmp_path, 1, run, *other)]
    line = refused(two_nodes("lightning", nodes, tmp_path), run)
    assert "data.batch_size (rank 0: 8, rank 1: 4)" in line
    assert "model.config.n_embd (rank 0: 32, rank 1: 64)" in line


@pytest.mark.slow
def test_node_local_folders_and_workers_may_differ(tmp_path: Path) -> None:
    """Node 1: its own data folder (token cache), its own copy of the corpus, its own number of
    tokenizing processes."""
    corpus = one_file_corpus(tmp_path / "corpus")
    copy = tmp_path / "node1" / "corpus.txt"
    copy.parent.mkdir()
    shutil.copy(corpus, copy)
    run = tmp_path / "run"
    node1 = (f"data.source.path={copy}", "data.prepare_workers=1", "data.prepare_chunk_mb=2")
    nodes = [node_overrides(tmp_path, 0, run), node_overrides(tmp_path, 1, run, *node1)]
    for node, result in enumerate(two_nodes("torchrun", nodes, tmp_path)):
        assert result.returncode == 0, f"node {node}: {result.stdout[-3000:]}"
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4


def test_the_line_groups_ranks_and_names_five_keys_at_most() -> None:
    same = {f"k{i}": "1" for i in range(7)}
    ranks = [same, *[{**same, **{f"k{i}": "2" for i in range(7)}}] * 3, same]
    line = settings_differ(ranks)
    assert line is not None and "k0 (ranks 0, 4: 1, ranks 1-3: 2)" in line
    assert "k4 (" in line and "k5 (" not in line and "and 2 more" in line
    assert settings_differ([same, dict(same)]) is None
    assert "k0 (rank 0: 1, rank 1: <not set>)" in (settings_differ([same, {}]) or "")


def test_values_that_differ_past_what_the_line_shows_still_differ() -> None:
    # Review: values were cut to 60 characters before the ranks compared them, so two LoRA
    # target lists that differ at their ends passed, and DDP failed in torch's traceback.
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"]
    one = rank_settings(OmegaConf.create({"model": {"peft": {"target_modules": modules}}}))
    other = rank_settings(
        OmegaConf.create({"model": {"peft": {"target_modules": [*modules, "down_proj"]}}})
    )
    line = settings_differ([one, other])
    assert line is not None and "model.peft.target_modules (rank 0: " in line, line
    assert "…" in line  # shown cut, compared whole


def test_node_local_copies_and_rank_zero_loggers_may_differ() -> None:
    def settings(node: int) -> dict[str, str]:
        return rank_settings(
            OmegaConf.create(
                {
                    "model": {"pretrained": f"/node{node}/gpt2"},
                    "data": {"tokenizer": {"name": f"/node{node}/gpt2"}},
                    "logger": {"wandb": {"entity": f"team{node}"}},
                }
            )
        )

    assert settings_differ([settings(0), settings(1)]) is None
