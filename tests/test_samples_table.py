"""What TextSamples writes beyond its text: the incremental W&B table `samples`, read back from
the offline run with wandb's own reader, and the mode of samples.txt under the user's umask."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.cli import wandb_records, wandb_summary
from tests.helpers.corpora import write_corpus
from tests.helpers.samples import blocks, train_with_samples

TABLE_ARTIFACT = "wandb-run-incremental-table"  # wandb's type for one increment of a table


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("samples-table") / "corpus")


def test_samples_table_logs_only_new_rows_and_reads_back_whole(
    corpus: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validations at steps 2, 4 and 6 (the final one, also at step 6, samples no more): three
    increments of two rows each; together they are every row of samples.txt, in order."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # wandb's staging copies
    run_dir = tmp_path / "run"
    train_with_samples(run_dir, data_dir, corpus, "logger=wandb", "trainer.max_steps=6")
    found = blocks(run_dir / "samples.txt")
    assert [step for step, _ in found] == [2, 4, 6]
    expected = [[step, *split(sample)] for step, samples in found for sample in samples]

    (run,) = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(run_dir)
    logged = [
        r["history"]["item"]
        for r in records
        if r.get("type") == "history" and "samples._type" in r["history"]["item"]
    ]
    assert [item["samples._type"] for item in logged] == ["incremental-table-file"] * 3
    assert [item["samples.increment_num"] for item in logged] == [0, 1, 2]
    assert [item["trainer/global_step"] for item in logged] == [2, 4, 6]
    assert [item["samples.nrows"] for item in logged] == [2, 4, 6]  # rows so far
    assert [len(item["samples.previous_increments_paths"]) for item in logged] == [0, 1, 2]

    # Each increment's file holds only its own rows: the whole table is their concatenation.
    rows = []
    for item in logged:
        increment = json.loads((run / "files" / item["samples.path"]).read_text())
        assert increment["columns"] == ["step", "prompt", "completion"]
        assert len(increment["data"]) == 2
        assert {row[0] for row in increment["data"]} == {item["trainer/global_step"]}
        rows += increment["data"]
    assert [[s, p, (p + c).rstrip("\n")] for s, p, c in rows] == expected

    # The same increments as wandb artifacts (what `wandb sync` uploads), one row pair each.
    artifacts = [r["artifact"] for r in records if r.get("type") == "artifact"]
    increments = [a for a in artifacts if a["type"] == TABLE_ARTIFACT]
    assert len(increments) == 3
    uploaded = []
    for artifact in increments:
        (entry,) = artifact["manifest"]["contents"]
        uploaded += json.loads(Path(entry["local_path"]).read_text())["data"]
    assert uploaded == rows

    summary = wandb_summary(run_dir)["summary"]["samples"]
    assert summary["_type"] == "incremental-table-file" and summary["nrows"] == 6


def split(sample: str) -> tuple[str, str]:
    """A samples.txt entry as (prompt, the entry itself) to compare with a table row."""
    prompt = next(p for p in ("The cat", "A dog") if sample.startswith(p))
    return prompt, sample.rstrip("\n")


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_samples_file_follows_the_umask(
    umask: int, corpus: Path, tmp_path: Path, data_dir: Path
) -> None:
    """samples.txt gets 0666 less the umask, as every file lmtrain writes (a temporary file
    from Python's tempfile would be 0600 whatever the umask)."""
    run_dir = tmp_path / "run"
    previous = os.umask(umask)
    try:
        train_with_samples(run_dir, data_dir, corpus, "logger=none", "trainer.max_steps=4")
    finally:
        os.umask(previous)
    path = run_dir / "samples.txt"
    assert [step for step, _ in blocks(path)] == [2, 4]  # the second block rewrote the file
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in run_dir.iterdir() if ".tmp" in p.name] == []
