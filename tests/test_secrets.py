"""Secrets from the environment never land in what a run writes: checkpoints, the W&B run, the
run folder's logs and configs, an export and its model card."""

from __future__ import annotations

import secrets
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lmtrain.models.checkpoint import CHECKPOINT_KEY
from lmtrain.utils.redact import REDACTED, environment_secrets, is_secret_key, redact
from tests.helpers.cli import run_cli


def test_secret_keys_and_environment_values_are_redacted() -> None:
    for key in ("api_key", "WANDB_API_KEY", "token", "hf_token", "auth_token", "access_token",
                "password", "client_secret", "aws_secret_access_key", "private_key"):  # fmt: skip
        assert is_secret_key(key), key
    for key in ("tokenizer", "max_new_tokens", "tokens_seen", "eos_token_id", "eos_token",
                "pad_token", "vocab_size", "name", "path", "top_k"):  # fmt: skip
        assert not is_secret_key(key), key

    environ = {
        "HF_TOKEN": "hf_abcdefgh12345",
        "MY_SECRET": "s3cr3t-value",
        "TOKENIZERS_PARALLELISM": "false-but-long-enough",  # not a credential
        "GITHUB_TOKEN": "short",  # too short to hunt for
        "HF_TOKEN_PATH": "/root/.cache/huggingface/token",  # where a secret is, not the secret
    }
    found = environment_secrets(environ)
    assert found == ["hf_abcdefgh12345", "s3cr3t-value"]
    config = {
        "logger": {"wandb": {"api_key": "k", "project": "p", "tags": ["dev", "s3cr3t-value"]}},
        "data": {
            "source": {"load_kwargs": {"token": None, "url": "https://x/?t=hf_abcdefgh12345"}}
        },
        "eos_token": "<|endoftext|>",
        "note": "false-but-long-enough",
    }
    assert redact(config, found) == {
        "logger": {"wandb": {"api_key": REDACTED, "project": "p", "tags": ["dev", REDACTED]}},
        "data": {"source": {"load_kwargs": {"token": None, "url": REDACTED}}},
        "eos_token": "<|endoftext|>",
        "note": "false-but-long-enough",
    }


def test_shipped_configs_have_nothing_to_redact(compose_cfg) -> None:
    for overrides in ([], ["experiment=finetune_gpt2"], ["data=hf_dataset", "model=llama_tiny"]):
        cfg = compose_cfg(*overrides, tiny=False)
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra")
        assert redact(plain, []) == plain, overrides


def test_no_secret_reaches_checkpoints_wandb_logs_or_exports(tmp_path: Path, play: Path) -> None:
    env = {
        "WANDB_API_KEY": secrets.token_hex(20),
        "HF_TOKEN": "hf_" + secrets.token_hex(12),
        "MY_SECRET": secrets.token_hex(12),
    }
    run = tmp_path / "run"
    trained = run_cli(
        "train",
        "data=shakespeare_char",
        f"data.source.path={play}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run}",
        "logger=wandb",
        "model.config.n_layer=1",
        "model.config.n_embd=32",
        "model.config.n_head=2",
        "data.block_size=32",
        "data.batch_size=4",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
        "samples.max_new_tokens=4",
        # A key named as a secret, a secret under an innocent key, and the W&B key itself.
        "+extra.token=${oc.env:MY_SECRET}",
        "+extra.note=see-${oc.env:HF_TOKEN}",
        "+extra.wandb_api_key=${oc.env:WANDB_API_KEY}",
        # W&B keeps the run's tags, group and notes as given, outside the redacted config.
        "tags=[dev,see-${oc.env:HF_TOKEN}]",
        "logger.wandb.group=${oc.env:MY_SECRET}",
        "+logger.wandb.notes=n-${oc.env:WANDB_API_KEY}",
        env=env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    extra = checkpoint[CHECKPOINT_KEY]["run_config"]["extra"]
    assert extra == {"token": REDACTED, "note": REDACTED, "wandb_api_key": REDACTED}

    export_dir = tmp_path / "export"
    exported = run_cli(
        "export",
        f"ckpt_path={ckpt}",
        f"out_dir={export_dir}",
        f"hydra.run.dir={tmp_path / 'export-run'}",
        env=env,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (export_dir / "README.md").is_file()

    wandb_files = list((run / "wandb").rglob("*.wandb"))
    assert wandb_files and any(REDACTED.encode() in f.read_bytes() for f in wandb_files)
    scanned = [p for p in tmp_path.rglob("*") if p.is_file() and "data" not in p.parts[-4:]]
    assert len(scanned) > 20  # checkpoints, W&B run, logs, .hydra, the export
    for path in scanned:
        content = path.read_bytes()
        for name, value in env.items():
            assert value.encode() not in content, f"{name} found in {path}"
