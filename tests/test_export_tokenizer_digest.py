"""An export's lmtrain.json records the digest of its tokenizer, and every tool that loads the
folder checks it: tokenizer files of another tokenizer of the same size were evaluated with
exit code 0 and wrong numbers (found by a red team). The digest is of the tokenizer as it loads,
so exporting again, re-saving the tokenizer or giving it a pad token keeps it; folders without
the record load as before."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from lmtrain.data.tokenizers import EOS_TOKEN
from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model
from lmtrain.models.tokenizer_digest import DIGEST_KEY, check_tokenizer_digest, tokenizer_digest
from lmtrain.train import train
from tests.helpers import pretrained
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_RUN, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import eval_tiny, export_tiny, train_tiny

OTHER = "holds tokenizer files other than the ones it was exported with"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """A tiny GPT-2 with a 300-token BPE, trained 4 steps: its last.ckpt and its export."""
    root = tmp_path_factory.mktemp("tokenizer-digest")
    ckpt = train_tiny(root / "run", data_dir, write_corpus(root / "corpus"))
    return ckpt, export_tiny(ckpt, root / "hf", data_dir)


def recorded(folder: Path) -> str:
    return json.loads((folder / "lmtrain.json").read_text())[DIGEST_KEY]


def other_tokenizer(size: int) -> Tokenizer:
    """A byte-level BPE of exactly `size` tokens trained here on text of made-up words, which
    shares no merges with the corpus's: what a copy from another model would put in a folder."""
    rng = random.Random(1)
    words = ["".join(rng.choice("qxzjkvwy") for _ in range(rng.randint(3, 8))) for _ in range(400)]
    text = [" ".join(rng.choice(words) for _ in range(50)) for _ in range(200)]
    bpe = pretrained.tiny_bpe(text, size).backend_tokenizer
    assert bpe.get_vocab_size() == size
    return bpe


def swapped(folder: Path, copy: Path) -> Path:
    """A copy of `folder` whose tokenizer.json is another tokenizer's of the same size."""
    shutil.copytree(folder, copy)
    size = len(AutoTokenizer.from_pretrained(folder))
    other_tokenizer(size).save(str(copy / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(copy)
    assert (
        len(theirs) == size
        and theirs.get_vocab() != AutoTokenizer.from_pretrained(folder).get_vocab()
    )
    return copy


def without_record(folder: Path, copy: Path) -> Path:
    """A copy of `folder` whose lmtrain.json has no digest, as exports made before it."""
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "lmtrain.json").read_text())
    del meta[DIGEST_KEY]
    (copy / "lmtrain.json").write_text(json.dumps(meta))
    return copy


def test_the_digest_is_the_tokenizers_as_loaded_and_the_same_on_every_export(
    exported: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    ckpt, folder = exported
    digest = recorded(folder)
    assert digest == tokenizer_digest(AutoTokenizer.from_pretrained(folder))
    assert digest == tokenizer_digest(load_model(ckpt).tokenizer)  # the checkpoint's, in memory
    assert recorded(export_tiny(ckpt, tmp_path / "again", data_dir)) == digest
    assert recorded(export_tiny(folder, tmp_path / "from-folder", data_dir)) == digest

    # Re-saved by transformers, with a pad token and a chat template: the same tokens and ids.
    resaved = shutil.copytree(folder, tmp_path / "resaved")
    tokenizer = AutoTokenizer.from_pretrained(resaved)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(resaved)
    assert load_model(resaved).tokenizer.pad_token == EOS_TOKEN
    # A new `<pad>` past the exported ids (the usual fine-tuning preparation) changes no id the
    # model was trained on (review: it was refused as another tokenizer).
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    check_tokenizer_digest(folder, tokenizer, digest)
    assert tokenizer_digest(tokenizer) != digest  # the whole vocabulary is another


def test_another_tokenizer_of_the_same_size_is_refused_in_one_line(
    exported: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    _, folder = exported
    other = swapped(folder, tmp_path / "other")
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(run_cli, "eval", f"ckpt_path={other}", logs),
            pool.submit(run_cli, "generate", f"ckpt_path={other}", "prompt=the", logs),
        ]
        for run in runs:
            result = run.result()
            assert result.returncode == 1, result.stderr[-2000:]
            assert_one_line_error(
                result, f"ckpt_path={str(other)!r} {OTHER}", "export the checkpoint again"
            )
    with pytest.raises(LMTrainError) as refusal:
        load_model(other)  # the Python API, and export from the folder, load through it
    assert str(refusal.value) == (
        f"ckpt_path={str(other)!r} {OTHER} (its lmtrain.json records their tokenizer_digest): "
        "copy in the tokenizer files of the export, or export the checkpoint again with "
        "lmtrain.export"
    )

    metrics = eval_tiny(folder, tmp_path / "eval", data_dir)  # the untouched export
    assert math.isfinite(metrics["val/loss"]) and 0 < metrics["val/bpb"] < 8
    plain = without_record(folder, tmp_path / "plain")  # an export made before the record
    assert load_model(plain).tokenizer.get_vocab() == load_model(folder).tokenizer.get_vocab()


def test_a_record_that_is_no_string_is_an_unusable_lmtrain_json(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _, folder = exported
    odd = shutil.copytree(folder, tmp_path / "odd")
    meta = json.loads((odd / "lmtrain.json").read_text())
    (odd / "lmtrain.json").write_text(json.dumps({**meta, DIGEST_KEY: 3}))
    with pytest.raises(
        LMTrainError, match=r"unusable lmtrain.json \(its tokenizer_digest is a num"
    ):
        load_model(odd)


def test_an_adapter_folder_records_and_checks_its_tokenizer(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, data_dir: Path
) -> None:
    """export merge=false writes peft's adapter folder, with the run's tokenizer beside it."""
    base = pretrained.pretrained_base(tmp_path_factory)
    cfg = compose(
        "train",
        tmp_path / "run",
        data_dir,
        "experiment=finetune_lora",
        f"model.pretrained={base}",
        f"data.source.path={pretrained.new_text(tmp_path_factory)}",
        *TINY_RUN,
        "trainer.max_steps=2",
        "logger=none",
    )
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    adapters = export_tiny(ckpt, tmp_path / "adapters", data_dir, "merge=false")
    assert (adapters / "adapter_config.json").is_file()
    assert recorded(adapters) == tokenizer_digest(AutoTokenizer.from_pretrained(base))
    assert (
        load_model(adapters).tokenizer.get_vocab()
        == AutoTokenizer.from_pretrained(base).get_vocab()
    )
    other = swapped(adapters, tmp_path / "other")
    with pytest.raises(LMTrainError, match=re.escape(f"ckpt_path={str(other)!r} {OTHER}")):
        load_model(other)
