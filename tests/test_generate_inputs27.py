"""`lmtrain.generate` inputs a red team found mishandled (gen27): a temperature too small to
sample with, and a prompt file that starts with a UTF-8 byte order mark."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.generate import generate, read_prompt, sampling_refusal
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.compose import compose


def test_a_temperature_too_small_to_sample_with_is_one_line(base: Path, tmp_path: Path) -> None:
    """temperature=1e-40 passes the checks (positive, finite), then the logits divided by it
    overflow to inf and torch.multinomial raised a traceback; export refused it in one line."""
    result = run_cli(
        "generate",
        f"ckpt_path={base}",
        "prompt=the",
        "temperature=1e-40",
        "max_new_tokens=3",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "temperature=1e-40", "larger temperature", "greedy=true")
    assert result.stdout == ""  # no partial text for a `> out.txt`


def test_a_prompt_files_byte_order_mark_is_dropped_as_training_drops_it(
    base: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    """A BOM (Windows editors write one) reached the byte-level model as three byte tokens it
    never trained on; training reads corpora with utf-8-sig. The file's prompt is the text."""
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes(b"\xef\xbb\xbfthe quick")
    texts = {}
    for name, given in (("file", f"prompt_file={prompt_file}"), ("text", "prompt='the quick'")):
        cfg = compose(
            "generate", tmp_path / name, data_dir, f"ckpt_path={base}", given,
            "greedy=true", "max_new_tokens=4", "device=cpu",
        )  # fmt: skip
        (texts[name],) = generate(cfg)
    assert texts["file"] == texts["text"]
    assert texts["file"].startswith("the quick")
    assert capsys.readouterr().out.startswith("the quick")


def test_a_bad_bytes_offset_counts_the_byte_order_mark(tmp_path: Path) -> None:
    """utf-8-sig decodes past the mark, so the offset it gives was 3 short; a file past the
    reader's first chunk (8 KiB) was wrong too."""
    for raw, offset in [(b"\xef\xbb\xbfabcdefg\xe9", 10), (b"x" * 20000 + b"\xe9", 20000)]:
        path = tmp_path / "prompt.txt"
        path.write_bytes(raw)
        with pytest.raises(LMTrainError, match=f"byte 0xe9 at offset {offset}\\)"):
            read_prompt(None, str(path))


def test_a_usual_temperature_is_not_blamed_for_scores_that_are_not_finite() -> None:
    """torch refuses nan probabilities (a diverged checkpoint) in the same words as inf ones."""
    err = RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    assert "overflow to inf; pass a larger temperature" in str(sampling_refusal(1e-40, err))
    usual = str(sampling_refusal(0.8, err))
    assert "scores are not finite (a diverged checkpoint)" in usual
    assert "larger temperature" not in usual
