"""`--help` of eval, generate and export names what each command reads.

Hydra's own help listed every group of configs/ (trainer, experiment, hparams_search, ...), most
of them lmtrain.train's, which these commands refuse: `generate trainer=gpu` ended in Hydra's
"Could not override 'trainer'" (red team).
"""

from __future__ import annotations

import pytest

from tests.helpers.cli import run_cli

USAGE = {
    "eval": "python -m lmtrain.eval ckpt_path=<.ckpt or exported folder>",
    "generate": "python -m lmtrain.generate ckpt_path=<.ckpt or exported folder>",
    "export": "python -m lmtrain.export ckpt_path=<.ckpt> out_dir=<folder>",
}


@pytest.mark.parametrize("command", sorted(USAGE))
def test_help_names_the_command_and_its_config_not_trains_groups(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert text.startswith(USAGE[command]), text[:500]
    assert "== Configuration groups ==" not in text
    assert "hparams_search:" not in text and "experiment:" not in text
    assert f"task_name: {command}\n" in text  # the config, as Hydra prints it


def test_generates_groups_are_refused_as_its_help_says() -> None:
    result = run_cli("generate", "trainer=gpu", "ckpt_path=x")
    assert result.returncode != 0
    assert "Could not override 'trainer'" in result.stderr
