"""The redaction rules of `lmtrain.utils.redact` where they go past a secret key or a long
environment value: short secret variables, credentials written inside strings, the one rule by
which an export drops keys, and the command line, which W&B would otherwise record."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.export import scrub
from lmtrain.models.checkpoint import CHECKPOINT_KEY
from lmtrain.utils.instantiate import instantiate_loggers
from lmtrain.utils.redact import (
    REDACTED,
    environment_secrets,
    is_secret_key,
    redact,
    short_environment_secrets,
)
from lmtrain.utils.wandb_run import wandb_settings
from tests.helpers.cli import run_cli, tiny_cli, wandb_records, wandb_summary
from tests.helpers.runs import export_tiny

SHORT_SECRET = "q7z"  # shorter than MIN_SECRET_CHARS


def test_short_environment_secret_is_redacted_as_a_whole_value_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {
        "GITHUB_TOKEN": SHORT_SECRET,
        "MY_PASSWORD": "pw",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # a flag, not a secret
        "CI_JOB_TOKEN": "",
        "HF_TOKEN_PATH": "~/t",  # where a secret is kept
        "EDITOR": "vi",  # not named as a secret
    }
    assert short_environment_secrets(environ) == ["pw", SHORT_SECRET]
    assert environment_secrets(environ) == []  # none long enough to look for inside strings

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config = {
        "extra": {"short": SHORT_SECRET, "tags": ["dev", SHORT_SECRET], "devices": "1"},
        # The short value inside other strings is chance, not the secret: left alone.
        "data": {"path": f"/data/{SHORT_SECRET}/x.txt", "name": f"runs/{SHORT_SECRET}1"},
        "note": f"{SHORT_SECRET} is not it",
    }
    assert redact(config) == {
        "extra": {"short": REDACTED, "tags": ["dev", REDACTED], "devices": "1"},
        "data": config["data"],
        "note": config["note"],
    }


def test_credentials_written_inside_strings_are_redacted() -> None:
    written = [
        "password: hunter2",
        "api_key=abc",
        "token=tok",
        "https://host/data?api_key=abc&page=2",
        "Authorization: Bearer abc",
        '{"password": "hunter2"}',
        "--hf_token=hf_abc",
        "extra.client_secret=s",
        "https://user:pw12345678@host/x",  # a URL's password, as in MLflow's tracking_uri
        "see postgresql://alice:s3cret@db:5432/mlflow",
    ]
    for text in written:
        assert redact({"note": text}, []) == {"note": REDACTED}, text
    innocent = [
        "eos_token: <|endoftext|>",  # vocabulary, not a credential
        "max_new_tokens=8",
        "lr=3e-4",
        "password: ",  # nothing written after it
        "a tokenizer: bpe",
        "see http://host:8080/path",
        "git+ssh://git@github.com/org/repo.git",  # a user name, no password
        "https://host:8080/a@b",  # a port, and an @ in the path
        f"password: {REDACTED}",  # already redacted
    ]
    for text in innocent:
        assert redact({"note": text}, []) == {"note": text}, text


def test_export_drops_the_keys_redaction_names_as_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", SHORT_SECRET)
    card = {
        "author": "Ada",
        "authors": ["Ada"],
        "passphrase": "x",
        "auth_header": "y",
        "hf_token": "z",
        "eos_token": "<|endoftext|>",
        "note": "password: hunter2",
        "short": SHORT_SECRET,
    }
    scrubbed = scrub({"hydra": {"run": {}}, "card": card})
    assert scrubbed == {
        "card": {
            "author": "Ada",
            "authors": ["Ada"],
            "eos_token": "<|endoftext|>",
            "note": REDACTED,
            "short": REDACTED,
        }
    }
    for key in card:  # one rule: an export drops exactly the keys whose values redact() hides
        assert (key not in scrubbed["card"]) == is_secret_key(key), key


def test_wandb_system_metadata_is_off_unless_turned_on(compose_cfg) -> None:
    assert wandb_settings(compose_cfg().logger.wandb).x_disable_meta is True
    own_entry = compose_cfg("~logger.wandb.settings").logger.wandb  # a logger config of one's own
    assert wandb_settings(own_entry).x_disable_meta is True
    turned_on = compose_cfg("logger.wandb.settings.x_disable_meta=false").logger.wandb
    assert wandb_settings(turned_on).x_disable_meta is False


def test_bad_wandb_settings_are_refused_in_one_line(compose_cfg) -> None:
    cfg = compose_cfg("+logger.wandb.settings.x_disable_metaa=true")
    with pytest.raises(LMTrainError) as err:
        instantiate_loggers(cfg.logger, run_cfg=cfg)
    assert str(err.value) == (
        "logger.wandb.settings has bad values: x_disable_metaa=True (Extra inputs are not "
        "permitted): use fields of wandb.Settings with values of their type (e.g. "
        "x_disable_meta=true)"
    )


def test_secrets_typed_in_a_command_reach_no_wandb_run_checkpoint_or_export(
    tmp_path: Path, data_dir: Path
) -> None:
    typed = secrets.token_hex(16)  # the value of a secret key, typed on the command line
    written = secrets.token_hex(16)  # a credential written inside a string
    out = run_cli(
        "train",
        "-m",
        *tiny_cli(
            tmp_path,
            data_dir,
            "logger=wandb",
            "trainer.max_steps=2",
            # A one-job sweep over a secret key: the W&B run is named by it.
            f"+extra.password=choice({typed})",
            f"+extra.note='password: {written}'",
            "+extra.short=${oc.env:GITHUB_TOKEN}",
            f"+extra.dir=runs/{SHORT_SECRET}1",
        ),
        env={"GITHUB_TOKEN": SHORT_SECRET},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (job,) = (tmp_path / "logs" / "train" / "multiruns").glob("*/0")

    kept = {"note": REDACTED, "short": REDACTED, "dir": f"runs/{SHORT_SECRET}1"}
    ckpt = job / "checkpoints" / "last.ckpt"
    run_config = torch.load(ckpt, weights_only=True)[CHECKPOINT_KEY]["run_config"]
    assert run_config["extra"] == {"password": REDACTED, **kept}
    summary = wandb_summary(job)
    assert summary["config"]["extra"] == {"password": REDACTED, **kept}
    assert summary["name"] == f"+extra.password={REDACTED} (job 0)"  # redacted: numbered apart
    # W&B's system metadata (the command line among it) is not recorded.
    assert [r for r in wandb_records(job) if r.get("type") == "environment"] == []

    folder = export_tiny(ckpt, tmp_path / "export", data_dir)
    assert json.loads((folder / "lmtrain.json").read_text())["run_config"]["extra"] == kept
    uploaded = [*(job / "wandb").rglob("*"), *(job / "checkpoints").rglob("*"), *folder.rglob("*")]
    files = [p for p in uploaded if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and len(files) > 10
    for path in files:
        content = path.read_bytes()
        assert typed.encode() not in content and written.encode() not in content, path
