"""What eval, generate and export take as `ckpt_path`, run as a user runs them.

A weights-only save (`save_weights_only=true`, which the docs and the resume error send to these
tools) is evaluated, sampled and exported like a whole checkpoint. A damaged export folder (cut
short weights, a broken or non-object lmtrain.json or config.json) and an empty `.ckpt` (a copy
cut short) are one line naming the file, in every tool, before any work starts.
"""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from lmtrain.data.tokenizers import char_tokenizer
from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model, read_checkpoint_file, resolve_ckpt_path
from lmtrain.models.checkpoint_contents import check_same_tokenizer
from lmtrain.models.export_folder import export_checkpoint
from lmtrain.models.generation import generate_text
from lmtrain.utils.safe_load import load_torch_file
from lmtrain.utils.tensor_digest import DIGEST_KEY
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import export_tiny, train_tiny

PROMPT = "The dog"


@pytest.fixture(scope="module")
def weights_only_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """last.ckpt of a tiny run saved as docs/runs.md says: `save_weights_only=true`."""
    root = tmp_path_factory.mktemp("weights_only")
    corpus = write_corpus(root / "corpus")
    override = "+callbacks.model_checkpoint.save_weights_only=true"
    return train_tiny(root / "run", data_dir, corpus, override)


def run_all(runs: dict[str, tuple[str, ...]]) -> dict:
    """Each (module, *overrides) run as a CLI, two at a time (~7 s of imports each)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda args: run_cli(*args), runs.values())
        return dict(zip(runs, results, strict=True))


def test_eval_generate_and_export_take_a_weights_only_checkpoint(
    weights_only_ckpt: Path, tmp_path: Path
) -> None:
    checkpoint = load_torch_file(weights_only_ckpt)
    assert "optimizer_states" not in checkpoint  # what the docs call a weights-only save
    ckpt = f"ckpt_path={weights_only_ckpt}"
    out = tmp_path / "hf"
    results = run_all(
        {
            "eval": ("eval", ckpt, f"hydra.run.dir={tmp_path / 'eval'}"),
            "generate": (
                "generate",
                ckpt,
                f"prompt='{PROMPT}'",
                "greedy=true",
                "max_new_tokens=20",
                f"hydra.run.dir={tmp_path / 'generate'}",
            ),
            "export": ("export", ckpt, f"out_dir={out}", f"hydra.run.dir={tmp_path / 'export'}"),
        }
    )
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])

    # The export holds the checkpoint's own weights, and loads with its tokenizer.
    loaded = load_model(out)
    exported = loaded.model.state_dict()
    for name, tensor in checkpoint["state_dict"].items():
        torch.testing.assert_close(exported[name.removeprefix("model.")], tensor)
    # generate printed what those weights give.
    (expected,) = generate_text(
        loaded.model, loaded.tokenizer, PROMPT, max_new_tokens=20, greedy=True, stop_at_eos=True
    )
    assert results["generate"].stdout == expected + "\n"
    assert len(expected) > len(PROMPT)
    # eval scored the trained model: the loss training measured on the same val split.
    loss = json.loads((tmp_path / "eval" / "metrics.json").read_text())["val/loss"]
    trained = json.loads((weights_only_ckpt.parent.parent / "metrics.json").read_text())
    assert math.isfinite(loss) and loss == pytest.approx(trained["val/loss"], abs=1e-3)


def damaged_copy(folder: Path, copy: Path, name: str, content: bytes) -> Path:
    """A copy of the export `folder` whose file `name` holds `content`."""
    shutil.copytree(folder, copy)
    (copy / name).write_bytes(content)
    return copy


def refused(path: Path, *fragments: str) -> None:
    """What loads a model for eval, generate and export refuses `path` in one line."""
    with pytest.raises(LMTrainError) as refusal:
        load_model(path)
    text = str(refusal.value)
    assert "\n" not in text and f"ckpt_path={str(path)!r}" in text, text
    assert all(fragment in text for fragment in fragments), text


def test_damaged_export_folders_and_an_empty_checkpoint_are_one_line_errors(
    weights_only_ckpt: Path, tmp_path: Path, data_dir: Path
) -> None:
    folder = export_tiny(weights_only_ckpt, tmp_path / "hf", data_dir)
    weights = (folder / "model.safetensors").read_bytes()
    cut = damaged_copy(folder, tmp_path / "cut", "model.safetensors", weights[:1000])
    broken = damaged_copy(folder, tmp_path / "broken", "lmtrain.json", b'{"run_config": {\n')
    listed = damaged_copy(folder, tmp_path / "listed", "lmtrain.json", b"[1, 2]\n")
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    results = run_all(
        {
            "generate cut": ("generate", f"ckpt_path={cut}", "prompt=x", logs),
            "eval broken": ("eval", f"ckpt_path={broken}", logs),
            "export listed": ("export", f"ckpt_path={listed}", f"out_dir={tmp_path / 'out'}", logs),
            "generate empty": ("generate", f"ckpt_path={empty}", "prompt=x", logs),
        }
    )
    again = "copy the whole folder again, or export the checkpoint again with lmtrain.export"
    assert_one_line_error(results["generate cut"], f"{str(cut)!r}", "model.safetensors", again)
    assert_one_line_error(results["eval broken"], f"{str(broken)!r}", "lmtrain.json (", again)
    assert_one_line_error(
        results["export listed"], f"{str(listed)!r}", "lmtrain.json (it holds an array", again
    )
    assert not (tmp_path / "out").exists()
    assert_one_line_error(
        results["generate empty"], f"{str(empty)!r} is an empty file (0 bytes", "copy it again"
    )

    # The other JSON files and entries the tools read, through the same loader, and train's
    # reader on the empty file.
    refused(
        damaged_copy(folder, tmp_path / "config", "config.json", b"[]"),
        "unusable config.json (it holds an array, not an object)",
    )
    refused(
        damaged_copy(folder, tmp_path / "meta", "lmtrain.json", b'{"run_config": "x"}'),
        "unusable lmtrain.json (its run_config is a string, not an object)",
    )
    with pytest.raises(LMTrainError, match=r"is an empty file \(0 bytes"):
        resolve_ckpt_path(str(empty), tmp_path)
    # Another model's (larger) tokenizer: its ids would run past the embedding table.
    bigger = tmp_path / "bigger"
    shutil.copytree(folder, bigger)
    tokenizer = AutoTokenizer.from_pretrained(bigger)
    tokenizer.add_tokens([f"<extra{i}>" for i in range(1000)])
    tokenizer.save_pretrained(bigger)
    refused(bigger, f"has a tokenizer of {len(tokenizer)} tokens for a model of")


def test_a_checkpoint_of_another_tokenizer_is_refused_and_its_own_is_not(tmp_path: Path) -> None:
    """Resuming with another tokenizer (a corpus or setting changed, a cache rebuilt under new
    rules) would read the embedding rows as other tokens: refused by vocabulary and eos id."""

    def files_of(tokenizer: object, folder: Path) -> dict[str, str]:
        tokenizer.save_pretrained(folder)
        return {p.name: p.read_text() for p in folder.iterdir()}

    saved = char_tokenizer(["abcd"])
    files = files_of(saved, tmp_path / "saved")
    check_same_tokenizer("run/last.ckpt", files, char_tokenizer(["abcd"]))  # the same ids
    for other in (char_tokenizer(["abce"]), char_tokenizer(["abcde"])):  # other ids, more ids
        with pytest.raises(LMTrainError, match="was trained with another tokenizer"):
            check_same_tokenizer("run/last.ckpt", files, other)


def test_an_empty_last_ckpt_names_the_checkpoint_beside_it_to_pass_instead(
    weights_only_ckpt: Path, tmp_path: Path
) -> None:
    """The example of what to pass was <run folder>/checkpoints/last.ckpt: the empty file
    itself, with a whole best-* checkpoint beside it."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    best = folder / "best-step=6-val_loss=2.0.ckpt"
    shutil.copyfile(weights_only_ckpt, best)
    (folder / "last.ckpt").touch()
    with pytest.raises(LMTrainError) as refusal:
        read_checkpoint_file(folder / "last.ckpt")
    last = folder / "last.ckpt"
    assert str(refusal.value).endswith(
        f"move it aside (mv {last} {last}.damaged): resume= and ckpt_path=last then go on from "
        f"{best.name} (eval, generate, export: ckpt_path={best})"
    )  # ckpt_path=<best> beside resume= is refused
    other = folder / "step=3.ckpt"
    other.touch()
    with pytest.raises(LMTrainError) as refusal:
        read_checkpoint_file(other)
    assert str(refusal.value).endswith(f"pass another checkpoint, e.g. ckpt_path={best}")


@pytest.mark.parametrize(
    "document",
    [
        {"version": "1.0", "model": {"type": "Nope"}},  # KeyError: 'added_tokens'
        "unknown model type",  # tokenizers' bare Exception: "data did not match any variant"
    ],
)
def test_a_tokenizer_json_that_builds_no_tokenizer_is_one_line(
    weights_only_ckpt: Path, tmp_path: Path, data_dir: Path, document: dict | str
) -> None:
    """A tokenizer.json that parses but builds nothing (damaged, or written by a newer
    tokenizers) gave a traceback, in a folder and inside a checkpoint: only unparsable JSON was
    caught (red team rev_exrep)."""
    folder = export_tiny(weights_only_ckpt, tmp_path / "hf", data_dir)
    if isinstance(document, str):
        document = json.loads((folder / "tokenizer.json").read_text())
        document["model"]["type"] = "Nope"
    text = json.dumps(document)
    damaged = damaged_copy(folder, tmp_path / "damaged", "tokenizer.json", text.encode())
    refused(damaged, "its tokenizer files build no tokenizer (", "export the checkpoint again")

    checkpoint = load_torch_file(weights_only_ckpt)
    checkpoint["lmtrain"]["tokenizer_files"]["tokenizer.json"] = text
    # The tensor digest covers tensors only: the edited text still passes it.
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    refused(edited, "its tokenizer files build no tokenizer (", "written by lmtrain.train")


def test_a_checkpoint_of_nan_weights_is_one_line_on_export(
    weights_only_ckpt: Path, tmp_path: Path
) -> None:
    """Training never saves NaN weights, but a checkpoint from elsewhere may hold them: export
    blamed the generation settings (sampling met NaN probabilities), or, greedy, ended in a
    traceback calling it a bug of the export (red team rev_exrep)."""
    checkpoint = load_torch_file(weights_only_ckpt)
    checkpoint.pop(DIGEST_KEY)  # written by another tool: no digest to say it was altered
    weight = "model.transformer.h.0.ln_1.weight"
    checkpoint["state_dict"][weight] = checkpoint["state_dict"][weight].clone()
    checkpoint["state_dict"][weight][0] = float("nan")
    spoilt = tmp_path / "nan.ckpt"
    torch.save(checkpoint, spoilt)
    with pytest.raises(LMTrainError) as refusal:
        export_checkpoint(str(spoilt), str(tmp_path / "out"), root_dir=str(tmp_path))
    assert str(refusal.value) == (
        f"ckpt_path={str(spoilt)!r} holds NaN or inf weights (transformer.h.0.ln_1.weight): "
        "export a checkpoint of the run from before it diverged, such as its best-*.ckpt"
    )
    assert not (tmp_path / "out").exists()
