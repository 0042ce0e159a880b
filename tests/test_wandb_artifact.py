"""logger.wandb.log_model=true on an offline run: the best checkpoint, exported, is a W&B
artifact of type "model" in the run's .wandb file (read back with wandb's own reader), with files
that `wandb sync` can upload; a value the callback cannot serve is one line before training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from wandb.sdk.lib.hashutil import md5_file_b64

from lmtrain.train import train
from tests.helpers.assertions import one_error_line
from tests.helpers.cli import inspect_session, wandb_records, wandb_summary
from tests.helpers.compose import TINY, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import model_from_checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("wandb-artifact") / "corpus")


def train_logged(run_dir: Path, data_dir: Path, corpus: Path, *overrides: str) -> dict:
    """A TINY run (validations after steps 2 and 4) logged offline to W&B with log_model=true."""
    cfg = compose(
        "train",
        run_dir,
        data_dir,
        *TINY,
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=char",
        "logger=wandb",
        "logger.wandb.log_model=true",
        *overrides,
    )
    return train(cfg)


def model_artifacts(run_dir: Path) -> list[dict]:
    """The artifact records of type "model" in the offline run, as `wandb leet inspect` reads
    them from its .wandb file (the records `wandb sync` uploads)."""
    records = wandb_records(run_dir)
    artifacts = [r["artifact"] for r in records if r.get("type") == "artifact"]
    return [a for a in artifacts if a["type"] == "model"]


@pytest.mark.parametrize("copy_files", [False, True], ids=["in-place", "staged"])
def test_best_checkpoint_is_logged_offline_as_model_artifact(
    copy_files: bool,
    corpus: Path,
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging = tmp_path / "wandb-data" / "artifacts" / "staging"
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    run_dir = tmp_path / "run"
    train_logged(run_dir, data_dir, corpus, f"callbacks.wandb_model.copy_files={copy_files}")

    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    export = run_dir / "export"
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    (artifact,) = model_artifacts(run_dir)
    assert artifact["name"] == f"model-{run_id}" and artifact["run_id"] == run_id
    assert sorted(artifact["aliases"]) == ["best", "latest"]
    metadata = json.loads(artifact["metadata"])
    saved = torch.load(best, weights_only=True)
    assert metadata["checkpoint"] == best.name
    assert metadata["global_step"] == saved["global_step"]

    # The manifest lists every file of the export; each listed copy is there, byte for byte.
    entries = {e["path"]: e for e in artifact["manifest"]["contents"]}
    files = {str(p.relative_to(export)) for p in export.rglob("*") if p.is_file()}
    assert set(entries) == files
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= files
    for name, entry in entries.items():
        local = Path(entry["local_path"])
        # In place: hard links of the export's files (the same blocks), beside the export.
        where = staging if copy_files else run_dir / ".export-artifacts" / "step-4"
        assert local.is_relative_to(where), local
        assert md5_file_b64(local) == entry["digest"] == md5_file_b64(export / name), name
        assert int(entry["size"]) == local.stat().st_size

    # The export is the best checkpoint's model.
    model, _, _ = model_from_checkpoint(best)
    exported = AutoModelForCausalLM.from_pretrained(export)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(exported(input_ids=ids).logits, model(input_ids=ids).logits)
    assert wandb_summary(run_dir)["state"] == "finished"


def test_an_extended_runs_earlier_artifact_keeps_the_files_it_names(
    corpus: Path, tmp_path: Path, data_dir: Path
) -> None:
    """A resume that trains further exports again into the same folder: the first session's
    offline artifact named the export's files, whose bytes were then the step-6 model's, so its
    digests no longer matched what `wandb sync` would upload. A resume at the run's end exports
    the same model again: it made one more snapshot, a whole copy of the weights each time."""
    run_dir = tmp_path / "run"
    train_logged(run_dir, data_dir, corpus)
    train_logged(run_dir, data_dir, corpus, "ckpt_path=last", "trainer.max_steps=6")
    for _ in range(2):  # at its end: the same model; the card gains the final metrics once
        train_logged(run_dir, data_dir, corpus, "ckpt_path=last", "trainer.max_steps=6")

    sessions = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(sessions) == 4
    steps, folders = [], []
    for session in sessions:
        lines = inspect_session(session).splitlines()
        records = [json.loads(line) for line in lines]
        artifacts = [r["artifact"] for r in records if r.get("type") == "artifact"]
        (artifact,) = [a for a in artifacts if a["type"] == "model"]
        steps.append(json.loads(artifact["metadata"])["global_step"])
        for entry in artifact["manifest"]["contents"]:
            assert md5_file_b64(Path(entry["local_path"])) == entry["digest"], entry["path"]
        folders.append(
            {Path(e["local_path"]).parent.name for e in artifact["manifest"]["contents"]}
        )
    assert steps == [4, 6, 6, 6]
    assert folders == [{"step-4"}, {"step-6"}, {"step-6.2"}, {"step-6.2"}]
    snapshots = run_dir / ".export-artifacts"
    assert sorted(p.name for p in snapshots.iterdir() if p.is_dir()) == [
        "step-4",
        "step-6",
        "step-6.2",
    ]
    latest = run_dir / "export" / "model.safetensors"  # one copy of the step-6 weights
    for snapshot in ("step-6", "step-6.2"):
        assert latest.samefile(snapshots / snapshot / "model.safetensors")

    # A damaged record of a snapshot (cut short) turned the artifact off for every later
    # session (red team rev_diff10): it is passed over.
    (snapshots / "step-6.2.export").write_text('{"checkpoint": ')
    train_logged(run_dir, data_dir, corpus, "ckpt_path=last", "trainer.max_steps=6")
    (fifth,) = sorted((run_dir / "wandb").glob("offline-run-*"))[4:]
    records = [json.loads(line) for line in inspect_session(fifth).splitlines()]
    (artifact,) = [r["artifact"] for r in records if r.get("type") == "artifact"]
    for entry in artifact["manifest"]["contents"]:
        assert md5_file_b64(Path(entry["local_path"])) == entry["digest"], entry["path"]
    assert latest.samefile(snapshots / "step-6" / "model.safetensors")


def test_no_artifact_without_log_model(corpus: Path, tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    train_logged(run_dir, data_dir, corpus, "logger.wandb.log_model=false")
    assert model_artifacts(run_dir) == []
    assert not (run_dir / "export").exists()


def test_wandb_disabled_logs_no_artifact_and_writes_no_export(
    corpus: Path,
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """WANDB_MODE=disabled turns W&B off without touching the config: log_model=true then does
    what it does without a W&B logger (the export is the artifact's), and says so in one line."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="lmtrain.callbacks.wandb_artifact"):
        train_logged(run_dir, data_dir, corpus)
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))  # there was a model to export
    assert not (run_dir / "export").exists()
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_run_id").exists()
    (line,) = [r.getMessage() for r in caplog.records if "wandb_model" in r.getMessage()]
    assert "W&B is disabled" in line and "python -m lmtrain.export" in line, line


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["logger.wandb.log_model=all"], ["logger.wandb.log_model='all' is not true or false"]),
        (
            ["callbacks.wandb_model=null"],
            ["log_model=true needs the callback", "callbacks=default", "log_model=false"],
        ),
        (
            ["callbacks.wandb_model.export_dir=${paths.output_dir}"],
            ["callbacks.wandb_model.export_dir:", "is or contains", "pass a new folder"],
        ),
    ],
    ids=["all", "no-callback", "run-folder"],
)
def test_log_model_the_callback_cannot_serve_is_one_line_before_training(
    overrides: list[str],
    fragments: list[str],
    corpus: Path,
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_logged(run_dir, data_dir, corpus, *overrides)
    assert exit_info.value.code == 1
    line = one_error_line(capsys.readouterr().err)
    assert all(f in line for f in fragments), line
    assert not (run_dir / "checkpoints").exists()
