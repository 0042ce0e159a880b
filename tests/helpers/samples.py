"""Runs that write text samples, and samples.txt read back: shared by the tests of the
text_samples callback (its text, its W&B table, its file mode)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.compose import TINY, compose

PROMPTS = "samples.prompts=['The cat','A dog']"


def train_with_samples(run_dir: Path, data_dir: Path, corpus: Path, *overrides: str) -> dict:
    """A TINY run (validations after steps 2 and 4) with a char tokenizer, two prompts and
    12 new tokens a sample; batches of 4 and 1 validation batch keep it short."""
    from lmtrain.train import train

    cfg = compose(
        "train",
        run_dir,
        data_dir,
        *TINY,
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=char",
        "data.batch_size=4",
        "trainer.limit_val_batches=1",
        PROMPTS,
        "samples.max_new_tokens=12",
        *overrides,
    )
    return train(cfg)


def blocks(path: Path) -> list[tuple[int, list[str]]]:
    """samples.txt as (step, [sample, ...]) per validation."""
    parts = re.split(r"^=== step (\d+) ===\n\n", path.read_text(), flags=re.M)[1:]
    return [
        (int(step), text.rstrip("\n").split("\n\n---\n\n"))
        for step, text in zip(parts[0::2], parts[1::2], strict=True)
    ]
