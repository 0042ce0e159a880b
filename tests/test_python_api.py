"""lmtrain from Python, as a Lightning user calls it: a plain Trainer, our module and datamodule."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lmtrain.data import TextDataModule
from lmtrain.data.sources import TextFilesSource
from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from tests.helpers.corpora import one_file_corpus

CONFIG = {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}


def data_module(corpus: Path, cache: Path, **settings) -> TextDataModule:
    kwargs = {"tokenizer": {"kind": "char"}, "block_size": 32, "batch_size": 8} | settings
    datamodule = TextDataModule(source=TextFilesSource(path=str(corpus)), cache_dir=cache, **kwargs)
    datamodule.prepare_data()
    return datamodule


def module(tokenizer, **settings) -> CausalLMModule:
    optimizer = functools.partial(torch.optim.AdamW, lr=3e-3)
    kwargs = {"config": CONFIG, "tokenizer": tokenizer, "optimizer": optimizer} | settings
    return CausalLMModule(model_type="gpt2", **kwargs)


def trainer(tmp_path: Path, **settings) -> L.Trainer:
    kwargs = {
        "max_steps": 4,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 2,
        "default_root_dir": tmp_path,
    } | settings
    return L.Trainer(**kwargs)


def fit_and_save(tmp_path: Path, corpus: Path, data_dir: Path, steps: int) -> Path:
    """A checkpoint of `steps` steps of a plain fit, saved after it."""
    datamodule = data_module(corpus, data_dir)
    run = trainer(tmp_path, max_steps=steps)
    run.fit(module(datamodule.tokenizer), datamodule)
    run.save_checkpoint(tmp_path / f"{steps}-steps.ckpt")
    return tmp_path / f"{steps}-steps.ckpt"


class FirstWindows(Callback):
    """Each epoch's first training batch, as token sums (which windows were read)."""

    def __init__(self) -> None:
        self.epochs: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.epochs.append(batch.sum(dim=1).tolist())


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return one_file_corpus(tmp_path / "corpus")


def test_a_loader_from_a_finished_trainer_reads_new_windows_each_epoch(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # The loader's start came from the data module's trainer: after a first fit, a loader handed
    # to a second trainer began every epoch at the first trainer's final count, the same windows.
    datamodule = data_module(corpus, data_dir)
    trainer(tmp_path).fit(module(datamodule.tokenizer), datamodule)
    windows = FirstWindows()
    second = trainer(tmp_path, max_steps=-1, max_epochs=3, limit_train_batches=2)
    second.callbacks.append(windows)
    second.fit(module(datamodule.tokenizer), train_dataloaders=datamodule.train_dataloader())
    assert len(windows.epochs) == 3
    assert windows.epochs[0] != windows.epochs[1] != windows.epochs[2] != windows.epochs[0]


def test_a_compiled_module_trains_with_its_forward_compiled(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # Lightning's documented route, torch.compile(module), failed inside Dynamo on self.log.
    # backend="eager": Dynamo traces and runs the graphs as captured (no inductor build), which
    # is where the failure was.
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    datamodule = data_module(corpus, data_dir)
    lm = module(datamodule.tokenizer)
    run = trainer(tmp_path, max_steps=3, log_every_n_steps=1)
    compiled = torch.compile(lm, backend="eager")
    run.fit(compiled, datamodule)
    assert run.global_step == 3
    assert torch.isfinite(run.callback_metrics["train/loss"])
    assert math.isfinite(run.validate(compiled, datamodule, verbose=False)[0]["val/loss"])
    assert counters["stats"]["unique_graphs"] > 0  # the forward went through Dynamo


@pytest.mark.parametrize(
    ("data_settings", "module_settings", "words"),
    [
        ({"block_size": 80}, {}, "the data module's block_size=80 is longer than the model's"),
        (
            {"tokenizer": {"kind": "bpe", "vocab_size": 300}},
            {"tokenizer": "char"},
            "the data module's tokenizer has 300 tokens but the model embeds only",
        ),
        (
            {},
            {"tokenizer": "other chars"},
            "the module was built with another tokenizer",
        ),
    ],
)
def test_a_module_built_apart_from_its_data_is_refused_in_one_line(
    tmp_path: Path, corpus: Path, data_dir: Path, data_settings, module_settings, words
) -> None:
    # Built apart in Python, a mismatch ended in an IndexError inside torch's embedding, or
    # (a tokenizer with the same count) trained on with the ids read as other tokens.
    datamodule = data_module(corpus, data_dir, **data_settings)
    assert "%" not in corpus.read_text()
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().replace("a", "%"))
    tokenizers = {
        "char": data_module(corpus, data_dir).tokenizer,
        "other chars": data_module(other, data_dir).tokenizer,  # as many tokens, one other
    }
    tokenizer = tokenizers[module_settings["tokenizer"]] if module_settings else None
    lm = module(tokenizer or datamodule.tokenizer)
    with pytest.raises(LMTrainError, match=words) as refusal:
        trainer(tmp_path).fit(lm, datamodule)
    assert "\n" not in str(refusal.value)


def test_load_from_checkpoint_rebuilds_the_module_with_the_checkpoints_tokenizer(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # Lightning's own loader, with no tokenizer= (the hyperparameters do not hold the
    # vocabulary): was a size-mismatch traceback, the model built with GPT-2's 50,257 tokens.
    datamodule = data_module(corpus, data_dir)
    lm = module(datamodule.tokenizer)
    run = trainer(tmp_path)
    run.fit(lm, datamodule)
    path = tmp_path / "model.ckpt"
    run.save_checkpoint(path)
    loaded = CausalLMModule.load_from_checkpoint(path).eval()
    assert loaded.tokenizer.get_vocab() == datamodule.tokenizer.get_vocab()
    windows = next(iter(datamodule.val_dataloader()))
    torch.testing.assert_close(loaded.loss(windows), lm.eval().loss(windows))
    with pytest.raises(
        LMTrainError, match="reads checkpoints weights-only: leave out weights_only"
    ):
        CausalLMModule.load_from_checkpoint(path, weights_only=False)


def test_shorthands_for_a_path_and_a_tokenizer_kind(corpus: Path, data_dir: Path) -> None:
    # Python users pass a path and "char"; they failed on a missing method or read "char" as
    # four settings named c, h, a and r.
    datamodule = TextDataModule(
        source=str(corpus), tokenizer="char", block_size=32, batch_size=8, cache_dir=data_dir
    )
    datamodule.prepare_data()
    assert datamodule.tokenizer.get_vocab() == data_module(corpus, data_dir).tokenizer.get_vocab()
    with pytest.raises(LMTrainError, match=r"source=\{'path': .* is not a corpus source"):
        TextDataModule(source={"path": str(corpus)}, tokenizer="char", block_size=8, batch_size=2)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"optimizer": torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())}, "optimizer=AdamW"),
        (
            {"scheduler": functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5)},
            "scheduler=StepLR does not take num_training_steps",
        ),
        (
            {"optimizer": functools.partial(torch.optim.AdamW, lrr=1e-3)},
            r"optimizer=partial\(AdamW, lrr=...\): AdamW takes no lrr; did you mean lr\?",
        ),
    ],
)
def test_an_optimizer_built_already_or_a_schedule_without_the_run_length_is_refused(
    settings, words
) -> None:
    # Both failed at the first step: "'AdamW' object is not callable", or a TypeError.
    with pytest.raises(LMTrainError, match=words) as refusal:
        module(None, **settings)
    assert "\n" not in str(refusal.value)


def test_a_composed_run_names_paths_output_dir_not_hydra_run_dir(
    tmp_path: Path, corpus: Path, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    # train(cfg) on a config from Hydra's compose() has no Hydra job: its run folder is
    # paths.output_dir, and that is the setting to change (the line said hydra.run.dir).
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lmtrain.train import train
    from tests.helpers.compose import CONFIG_DIR, TINY

    run = tmp_path / "run"
    overrides = [
        *TINY,
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=char",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.output_dir={run}",
        "trainer.max_steps=2",
        "logger=csv",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train(cfg)
    with pytest.raises(SystemExit):
        train(cfg)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: paths.output_dir={run} already holds"), error
    assert "pass another paths.output_dir" in error and "hydra.run.dir" not in error


def doc_scripts() -> list[str]:
    """The Python blocks of docs/python.md, in order."""
    text = (Path(__file__).parents[1] / "docs" / "python.md").read_text()
    return [block.split("\n", 1)[1] for block in text.split("```python")[1:] if "```" in block]


def run_script(source: str, folder: Path) -> subprocess.CompletedProcess:
    script = folder / "script.py"
    script.write_text(source.split("```", 1)[0])
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True
    )


def test_the_scripts_in_docs_python_md_run_as_written(tmp_path: Path, corpus: Path) -> None:
    plain, composed = doc_scripts()
    shutil.copy(corpus, tmp_path / "input.txt")
    done = run_script(plain, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "python" / "final.ckpt").is_file()
    assert re.search(r"^The ", done.stdout, re.MULTILINE), done.stdout  # the prompt, then text
    tiny = '"logger=csv",\n' + "".join(
        f"            {o!r},\n"
        for o in ["model.config.n_layer=1", "trainer.max_steps=4", "samples.prompts=[The]"]
    ).replace("'", '"')
    assert '"logger=csv",\n' in composed
    done = run_script(composed.replace('"logger=csv",\n', tiny), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "runs" / "composed" / "metrics.json").read_text())["val/loss"]


def test_a_fit_resumed_from_python_ends_with_the_weights_of_one_never_stopped(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # docs/python.md promises it with the ExactResume callback and a plain Trainer.
    from lmtrain.callbacks.resume import ExactResume

    def fit(steps: int, ckpt_path: Path | None = None) -> CausalLMModule:
        L.seed_everything(0)
        datamodule = data_module(corpus, data_dir)
        lm = module(datamodule.tokenizer, config=CONFIG | {"resid_pdrop": 0.1})  # uses the RNG
        run = trainer(tmp_path, max_steps=steps, callbacks=[ExactResume()], limit_val_batches=0)
        run.fit(lm, datamodule, ckpt_path=ckpt_path)
        run.save_checkpoint(tmp_path / f"{steps}.ckpt")
        return lm

    whole = fit(6)
    fit(3)
    resumed = fit(6, ckpt_path=tmp_path / "3.ckpt")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_module_built_without_a_tokenizer_is_warned_of(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # It trained silently with GPT-2's 50,257-token vocabulary and no bits per byte.
    datamodule = data_module(corpus, data_dir)
    with pytest.warns(
        UserWarning, match="the module was built without a tokenizer: it embeds 50257"
    ):
        trainer(tmp_path, max_steps=1).fit(module(None), datamodule)


class WritesAFile:
    """What a crafted checkpoint holds: unpickled, it creates `path` (it could run anything)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_plain_trainer_resumes_weights_only_whatever_the_environment(
    tmp_path: Path, corpus: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lightning's own CheckpointIO passes weights_only=None, which torch reads as False under
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (and for URLs): the crafted file's code ran.
    datamodule = data_module(corpus, data_dir)
    run = trainer(tmp_path, max_steps=2)
    run.fit(module(datamodule.tokenizer), datamodule)
    run.save_checkpoint(tmp_path / "real.ckpt")
    crafted = torch.load(tmp_path / "real.ckpt", weights_only=True)
    marker = tmp_path / "code-ran"
    crafted["extra"] = WritesAFile(marker)
    torch.save(crafted, tmp_path / "crafted.ckpt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(LMTrainError, match=r"crafted\.ckpt"):
        trainer(tmp_path, max_steps=4).fit(
            module(datamodule.tokenizer), datamodule, ckpt_path=tmp_path / "crafted.ckpt"
        )
    assert not marker.exists()


@pytest.mark.parametrize("tokenizer", [None, 5, "tokenizer object"])
def test_a_data_module_tokenizer_that_is_no_setting_is_one_line(
    corpus: Path, data_dir: Path, tokenizer
) -> None:
    # A TypeError ("'NoneType' object is not iterable") from inside the tokenizer checks.
    if tokenizer == "tokenizer object":
        tokenizer = data_module(corpus, data_dir).tokenizer
    with pytest.raises(LMTrainError, match=r"is not a tokenizer setting: pass a kind"):
        TextDataModule(source=corpus, tokenizer=tokenizer, block_size=8, batch_size=2)


def test_a_module_tokenizer_that_is_no_tokenizer_is_one_line() -> None:
    # "char", as the data module takes it, was an AttributeError on eos_token_id.
    with pytest.raises(LMTrainError, match="tokenizer='char' is not a tokenizer: pass datamodule"):
        module("char")


def test_a_new_fit_of_a_loaded_module_counts_its_own_tokens(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # load_from_checkpoint restored the run's counters, and a new fit at another batch size
    # then reported 0 (or a figure of the two mixed) as tokens_seen.
    first = fit_and_save(tmp_path, corpus, data_dir, steps=3)
    for batch_size in (4, 16):
        loaded = CausalLMModule.load_from_checkpoint(first)
        trainer(tmp_path, max_steps=2).fit(
            loaded, data_module(corpus, data_dir, batch_size=batch_size)
        )
        assert loaded.tokens_seen == 2 * batch_size * 32, batch_size


def test_a_list_of_corpus_paths_with_one_that_matches_nothing_is_refused(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # The missing file was dropped and training went on with the others (here and on the
    # command line, data.source.path=[...]).
    from lmtrain.errors import MissingCorpusError

    missing = tmp_path / "not-there.txt"
    datamodule = TextDataModule(
        source=[corpus, missing], tokenizer="char", block_size=8, batch_size=2, cache_dir=data_dir
    )
    with pytest.raises(MissingCorpusError, match=rf"'{missing}' matches no file: fix or drop it"):
        datamodule.prepare_data()


def test_a_loader_that_cannot_resume_where_the_checkpoint_stopped_says_so(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # trainer.fit(module, dm.train_dataloader(), ckpt_path=...): the loader knows no trainer's
    # count, and the resumed fit read the epoch's first windows again without a word.
    datamodule = data_module(corpus, data_dir)
    three = fit_and_save(tmp_path, corpus, data_dir, steps=3)
    loader = data_module(corpus, data_dir).train_dataloader()  # made with no trainer
    with pytest.warns(UserWarning, match=r"not from window 24 where the checkpoint stopped"):
        trainer(tmp_path, max_steps=5).fit(
            module(datamodule.tokenizer),
            train_dataloaders=loader,
            ckpt_path=three,
        )


def test_an_epoch_bound_fit_with_loader_workers_resumes_exactly_after_its_first_epoch(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # With max_epochs, a schedule's length (estimated_stepping_batches) makes Lightning build
    # the train iterator before it restores the checkpoint: worker processes read ahead from
    # window 0, and a fit resumed in epoch 1 trained on the first windows again.
    from lightning.pytorch.callbacks import ModelCheckpoint
    from transformers import get_cosine_schedule_with_warmup

    from lmtrain.callbacks.resume import ExactResume

    def fit(ckpt_path: Path | None = None) -> CausalLMModule:
        L.seed_everything(0)
        datamodule = data_module(corpus, data_dir, num_workers=2)
        schedule = functools.partial(get_cosine_schedule_with_warmup, num_warmup_steps=2)
        lm = module(datamodule.tokenizer, scheduler=schedule)
        saves = ModelCheckpoint(tmp_path / "ckpts", every_n_train_steps=6, save_top_k=-1)
        callbacks = [ExactResume(), saves]
        run = trainer(
            tmp_path,
            max_steps=-1,
            max_epochs=3,
            limit_train_batches=4,
            limit_val_batches=0,
            enable_checkpointing=True,
            callbacks=callbacks,
        )
        run.fit(lm, datamodule, ckpt_path=ckpt_path)
        return lm

    whole = fit()
    (saved,) = (tmp_path / "ckpts").glob("*step=6.ckpt")  # epoch 1, its second batch
    resumed = fit(ckpt_path=saved)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_cache_dir_that_is_no_path_is_one_line(corpus: Path) -> None:
    # None was a TypeError from pathlib.
    with pytest.raises(LMTrainError, match=r"data.cache_dir=None is not a folder: pass a path"):
        TextDataModule(source=corpus, tokenizer="char", block_size=8, batch_size=2, cache_dir=None)


def test_load_from_checkpoint_takes_strict_false_for_a_partial_state(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # The module set strict_loading=True, and Lightning refused strict=False as "in conflict".
    full = fit_and_save(tmp_path, corpus, data_dir, steps=2)
    checkpoint = torch.load(full, weights_only=True)
    dropped = "model.transformer.wpe.weight"
    del checkpoint["state_dict"][dropped]
    del checkpoint["lmtrain_tensor_digest"]  # as from a tool that writes none
    partial = tmp_path / "partial.ckpt"
    torch.save(checkpoint, partial)
    with pytest.raises(LMTrainError, match=f"Missing key.*{re.escape(dropped[6:])}"):
        CausalLMModule.load_from_checkpoint(partial)
    loaded = CausalLMModule.load_from_checkpoint(partial, strict=False)
    kept = "transformer.wte.weight"
    torch.testing.assert_close(
        loaded.model.state_dict()[kept], checkpoint["state_dict"][f"model.{kept}"]
    )


def test_load_from_checkpoint_reads_a_runs_hparams_yaml_or_the_arguments_alone(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    # Lightning read hparams_file into an OmegaConf node, and putting the checkpoint's
    # tokenizer into it failed ("Value 'TokenizersBackend' is not a supported primitive type").
    path = fit_and_save(tmp_path, corpus, data_dir, steps=2)
    model_node = {
        "_target_": "lmtrain.models.module.CausalLMModule",
        "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.001},
        "model_type": "gpt2",
        "config": CONFIG,
        "nan_guard": "skip",
    }
    files = {"run.yaml": {"task_name": "train", "model": model_node}, "own.yml": model_node}
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))  # JSON is YAML
        loaded = CausalLMModule.load_from_checkpoint(path, hparams_file=tmp_path / name)
        assert loaded.hparams.nan_guard == "skip", name  # the file's, over the checkpoint's
        assert loaded.optimizer_factory is torch.optim.AdamW, name  # factories are left out
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(LMTrainError, match=r"list\.yaml' holds no mapping of arguments: pass a"):
        CausalLMModule.load_from_checkpoint(path, hparams_file=tmp_path / "list.yaml")


def test_text_samples_of_a_second_fit_go_after_the_first_fits(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """A second `fit` of the same trainer goes on from the first (no checkpoint): its samples
    follow the first fit's in samples.txt, not replace them (a new run starts the file)."""
    from lmtrain.callbacks.samples import TextSamples

    datamodule = data_module(corpus, data_dir)
    samples = TextSamples(prompts=["ab"], dirpath=tmp_path, max_new_tokens=4)
    run = trainer(tmp_path, max_steps=2, val_check_interval=2, callbacks=[samples])
    lm = module(datamodule.tokenizer)
    run.fit(lm, datamodule)
    run.fit_loop.epoch_loop.max_steps = 4
    run.fit(lm, datamodule)
    headers = re.findall(r"^=== step (\d+) ===$", (tmp_path / "samples.txt").read_text(), re.M)
    assert headers == ["2", "4"]
