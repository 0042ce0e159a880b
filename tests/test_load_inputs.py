"""What eval, generate and `load_model` make of a LoRA on the embedding, and of paths that name
no checkpoint file (red team findings).

- LoRA on `embed_tokens` of an untied model trained, then eval died with "'Embedding' object
  has no attribute 'num_embeddings'": peft's layer wraps the table in `.base_layer`.
- A checkpoint named with a trailing "/", or one deleted, was sent to the damaged file's
  advice: move it aside (`mv`), a good file or one that is not there.
- `load_model` on a folder of checkpoints asked for tokenizer files (the CLI: pass a .ckpt),
  and `~/x` was not expanded.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.generate import generate
from lmtrain.models.checkpoint import load_model
from lmtrain.train import train
from lmtrain.utils.safe_load import checkpoint_error, load_torch_file
from tests.helpers.compose import TINY_RUN, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.pretrained import save_tiny_llama
from tests.helpers.runs import eval_tiny


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """2 steps of LoRA on the embedding of a tiny random Llama whose head is not tied to it."""
    root = tmp_path_factory.mktemp("lora-embedding")
    corpus = write_corpus(root / "corpus", n_docs=2, lines=60)
    texts = [p.read_text() for p in corpus.iterdir()]
    save_tiny_llama(root / "llama", texts, vocab_size=300, tied=False)
    run_dir, base = root / "run", root / "llama"
    cfg = compose(
        "train", run_dir, data_dir, "experiment=finetune_lora", f"model.pretrained={base}",
        "model.peft.target_modules=[embed_tokens]", f"data.source.path={corpus}", *TINY_RUN,
        "trainer.max_steps=2", "callbacks.text_samples=null", "logger=none",
    )  # fmt: skip
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def test_lora_on_the_embedding_evaluates_and_generates(
    ckpt: Path, tmp_path: Path, data_dir: Path
) -> None:
    assert "val/loss" in eval_tiny(ckpt, tmp_path / "eval", data_dir)
    settings = ["prompt=the", "greedy=true", "max_new_tokens=4", "device=cpu"]
    (text,) = generate(
        compose("generate", tmp_path / "gen", data_dir, f"ckpt_path={ckpt}", *settings)
    )
    assert text.startswith("the")


def test_paths_that_name_no_checkpoint_file(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A good file named with a trailing "/" loads, as on the command line.
    assert load_model(f"{ckpt}/").info["global_step"] == 2
    monkeypatch.setenv("HOME", str(ckpt.parents[2]))
    assert load_model(f"~/{ckpt.relative_to(ckpt.parents[2])}").info["global_step"] == 2

    # Read as they are, each says what the path is, never to move a file aside.
    gone = tmp_path / "gone.ckpt"
    refusals = {
        "names a file as a folder (a trailing /?)": f"{ckpt}/",
        f"ckpt_path={str(gone)!r} does not exist": gone,
        "is a folder, not a checkpoint file": tmp_path,
    }
    for words, path in refusals.items():
        with pytest.raises(LMTrainError) as refused:
            load_torch_file(path)
        assert words in str(refused.value) and "mv " not in str(refused.value), refused.value
    denied = PermissionError(errno.EACCES, "Permission denied", str(ckpt))  # root reads all
    message = str(checkpoint_error(ckpt, denied, "checkpoint"))
    assert "cannot be read (permission denied)" in message and "mv " not in message

    # A folder of checkpoints, from Python as from the command line.
    with pytest.raises(LMTrainError, match=r"checkpoints' is a folder without config.json: pass a"):
        load_model(ckpt.parent)
