"""`CausalLMModule`, `TextSamples` and checkpoint advice used from Python as docs/python.md says,
where no config check ran first (red team rev_api15): a dict changed after the module was built
was what its checkpoint saved; the rest ended in a traceback from Lightning, torch or
transformers, or did silently what the command line refuses in one line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from lmtrain.callbacks.samples import TextSamples
from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.checkpoint import read_checkpoint_file
from tests.helpers.corpora import one_file_corpus
from tests.test_python_api import CONFIG, data_module, fit_and_save, module, trainer


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return one_file_corpus(tmp_path / "corpus")


@pytest.fixture
def saved(tmp_path: Path, corpus: Path, data_dir: Path) -> Path:
    """A checkpoint of a 1-layer module (CONFIG), two steps of a plain fit."""
    return fit_and_save(tmp_path, corpus, data_dir, steps=2)


def one_line(refused: pytest.ExceptionInfo[LMTrainError]) -> str:
    message = str(refused.value)
    assert "\n" not in message, message
    return message


def test_a_config_dict_changed_after_the_module_was_built_leaves_its_checkpoint_alone(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """The red team's loop: modules built from one dict, changed between them. The checkpoint
    saved the changed dict, and load_from_checkpoint rebuilt a relu model of gelu_new weights."""
    datamodule = data_module(corpus, data_dir)
    settings = {**CONFIG, "activation_function": "gelu_new"}
    freeze = {"embeddings": False}
    trained = module(datamodule.tokenizer, config=settings, freeze=freeze)
    settings["activation_function"] = "relu"
    freeze["embeddings"] = True
    module(datamodule.tokenizer, config=settings, freeze=freeze)  # the loop's next module
    run = trainer(tmp_path, max_steps=2)
    run.fit(trained, datamodule)
    run.save_checkpoint(tmp_path / "gelu.ckpt")
    back = CausalLMModule.load_from_checkpoint(tmp_path / "gelu.ckpt").eval()
    assert back.model.config.activation_function == "gelu_new"
    assert back.hparams.freeze == {"embeddings": False}
    window = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(back(window[:, :-1]), trained.eval()(window[:, :-1]))


def test_a_misspelt_key_in_an_hparams_file_is_refused_as_the_keyword_is(
    saved: Path, tmp_path: Path
) -> None:
    """`compiel: true` in the file loaded with compile=False, without a word."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("nan_guard: skip\ncompiel: true\n")
    with pytest.raises(LMTrainError) as refused:
        CausalLMModule.load_from_checkpoint(saved, hparams_file=typo)
    assert one_line(refused) == (
        f"hparams_file={str(typo)!r} holds compiel: CausalLMModule takes no compiel; "
        "did you mean compile?"
    )
    typo.write_text("nan_guard: skip\ncompile: false\n")  # spelt right: taken
    assert CausalLMModule.load_from_checkpoint(saved, hparams_file=typo).nan_guard == "skip"


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_an_hparams_file_that_is_not_yaml_is_one_line(
    saved: Path, tmp_path: Path, suffix: str
) -> None:
    """.json was Lightning's ValueError traceback; .csv replaced the checkpoint's arguments
    wholesale instead of overriding them."""
    other = tmp_path / f"h{suffix}"
    other.write_text('{"nan_guard": "skip"}' if suffix == ".json" else "key,value\n")
    with pytest.raises(LMTrainError) as refused:
        CausalLMModule.load_from_checkpoint(saved, hparams_file=other)
    assert one_line(refused).startswith(
        f"hparams_file={str(other)!r} is not a YAML file (.yaml, .yml): pass a run's hparams.yaml"
    )


def test_resuming_a_checkpoint_of_another_size_is_one_line(
    saved: Path, tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """torch's "Error(s) in loading state_dict" traceback: the command line's check_same_model
    never ran."""
    datamodule = data_module(corpus, data_dir)
    two_layers = module(datamodule.tokenizer, config={**CONFIG, "n_layer": 2})
    with pytest.raises(LMTrainError) as refused:
        trainer(tmp_path, max_steps=3).fit(two_layers, datamodule, ckpt_path=saved)
    assert one_line(refused) == (
        f"ckpt_path={str(saved)!r} holds another model: n_layer=1 in the checkpoint but 2 here: "
        "resume with the checkpoint's model settings (CausalLMModule(model_type=..., "
        "config={...}) with n_layer=1), or drop ckpt_path to start from scratch"
    )


LOADERS = {
    "train windows past the context": (
        "fit",
        {"block_size": 128},
        {},
        "the train loader's windows are 129 tokens (block_size=128), longer than the model's "
        "context (64, its config's n_positions / max_position_embeddings): build the loader's "
        "data module with block_size <= 64, or the model with a longer context",
    ),
    "val windows past the context": (
        "validate",
        {"block_size": 128},
        {},
        "the val loader's windows are 129 tokens (block_size=128), longer than the model's",
    ),
    "token ids past the embedding table": (
        "fit",
        {},
        {"tokenizer": None, "config": {**CONFIG, "vocab_size": 8}},
        "the train loader's batch holds token id ",
    ),
}


@pytest.mark.parametrize("case", LOADERS)
def test_loaders_handed_to_a_trainer_without_their_data_module_that_do_not_fit_are_one_line(
    tmp_path: Path, corpus: Path, data_dir: Path, case: str
) -> None:
    """docs/python.md promised a one-line refusal, not an IndexError in torch: only a trainer's
    data module was checked."""
    call, data_settings, module_settings, expected = LOADERS[case]
    datamodule = data_module(corpus, data_dir, **data_settings)
    lm = module(**({"tokenizer": datamodule.tokenizer} | module_settings))
    run = trainer(tmp_path)
    with pytest.raises(LMTrainError) as refused:
        if call == "fit":
            run.fit(lm, train_dataloaders=datamodule.train_dataloader())
        else:
            run.validate(lm, dataloaders=datamodule.val_dataloader(), verbose=False)
    assert one_line(refused).startswith(expected)
    if "token id" in expected:
        assert one_line(refused).endswith(
            "but the model embeds only 8 tokens: build CausalLMModule(tokenizer="
            "datamodule.tokenizer, ...) after datamodule.prepare_data()"
        )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (None, "ckpt_path is not set: pass a .ckpt file or an exported folder"),
        ("dict.ckpt", "lacks state_dict, lmtrain.hf_config, lmtrain.tokenizer_files, so it was"),
        ("unversioned.ckpt", "lacks pytorch-lightning_version, which Lightning's"),
        ("folder", "is a folder (an export?): load_from_checkpoint takes a .ckpt file"),
    ],
)
def test_load_from_checkpoint_of_what_load_model_refuses_is_one_line(
    saved: Path, tmp_path: Path, path: str | None, expected: str
) -> None:
    """None was a TypeError, a dict without Lightning's keys a KeyError traceback."""
    given = None if path is None else tmp_path / path
    if path == "dict.ckpt":
        torch.save({"a": 1}, given)
    elif path == "unversioned.ckpt":
        checkpoint = torch.load(saved, weights_only=True)
        del checkpoint["pytorch-lightning_version"]
        torch.save(checkpoint, given)
    elif path == "folder":
        given.mkdir()
        (given / "config.json").write_text("{}")
    with pytest.raises(LMTrainError) as refused:
        CausalLMModule.load_from_checkpoint(given)
    assert expected in one_line(refused)


def test_a_checkpoint_of_a_compiled_inner_model_loads_and_restores_either_way(
    saved: Path, tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """`module.model = torch.compile(module.model)` saves names with `_orig_mod.`: refused by
    load_from_checkpoint as a damaged or foreign file, as a plain checkpoint was by a module
    compiled so (load_model and export strip the prefix)."""
    datamodule = data_module(corpus, data_dir)
    compiled = module(datamodule.tokenizer)
    compiled.model = torch.compile(compiled.model, backend="eager")
    run = trainer(tmp_path, max_steps=2)
    run.fit(compiled, datamodule)
    run.save_checkpoint(tmp_path / "inner.ckpt")
    groups = {g["name"]: len(g["params"]) for g in run.optimizers[0].param_groups}
    assert groups["decay"] > 0 and groups["no_decay"] > 0, groups  # decay was off: 0 and all
    back = CausalLMModule.load_from_checkpoint(tmp_path / "inner.ckpt")
    plain = {k.replace("_orig_mod.", ""): v for k, v in compiled.state_dict().items()}
    assert plain.keys() == back.state_dict().keys()
    for name, value in back.state_dict().items():
        assert torch.equal(value, plain[name]), name
    again = module(datamodule.tokenizer)
    again.model = torch.compile(again.model, backend="eager")
    trainer(tmp_path).validate(again, datamodule, ckpt_path=saved, verbose=False)  # a plain one
    weights = torch.load(saved, weights_only=True)["state_dict"]
    for name, value in again.state_dict().items():
        assert torch.equal(value, weights[name.replace("_orig_mod.", "")]), name


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"config": ["n_layer=1"]}, "model.config=['n_layer=1'] is not a mapping: pass a dict"),
        ({"config": "n_layer=1"}, "model.config='n_layer=1' is not a mapping: pass a dict"),
        ({"freeze": ["embeddings"]}, "model.freeze=['embeddings'] is not a mapping: pass a dict"),
    ],
)
def test_a_config_or_freeze_that_is_no_mapping_is_one_line(settings: dict, expected: str) -> None:
    """A ValueError or TypeError traceback from dict() or transformers."""
    with pytest.raises(LMTrainError) as refused:
        module(None, **settings)
    assert one_line(refused).startswith(expected)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"prompts": "RO"}, "samples.prompts='RO' is not a list of prompts: pass a list"),
        ({"temperature": 0}, "samples.temperature=0 must be positive"),
        ({"max_new_tokens": 0}, "samples.max_new_tokens=0 must be at least 1"),
        ({"top_k": 0}, "samples.top_k=0 must be at least 1"),
        ({"every_n_val": 0}, "samples.every_n_val=0 must be at least 1"),
    ],
)
def test_text_samples_refuses_what_the_samples_config_check_refuses(
    tmp_path: Path, settings: dict, expected: str
) -> None:
    """From Python nothing was checked: "RO" sampled "R" and "O", and temperature=0 or
    max_new_tokens=0 only warned at each validation, leaving no samples.txt."""
    with pytest.raises(LMTrainError) as refused:
        TextSamples(**({"prompts": ["ab"], "dirpath": tmp_path} | settings))
    assert one_line(refused).startswith(expected)
    assert TextSamples(prompts=("ab", "cd"), dirpath=tmp_path).prompts == ["ab", "cd"]


class Crafted:
    def __reduce__(self) -> tuple:
        return (print, ("not a checkpoint",))


def test_damaged_checkpoint_advice_names_a_sibling_lmtrain_wrote_and_torch_can_read(
    saved: Path, tmp_path: Path
) -> None:
    """The advice named the newest other *.ckpt by time alone: a torch-saved list or a crafted
    pickle beside a good best-* checkpoint was the file to pass instead."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    best = folder / "best-step=2-val_loss=3.0.ckpt"
    shutil.copyfile(saved, best)
    torch.save([1, 2], folder / "list.ckpt")
    torch.save(Crafted(), folder / "crafted.ckpt")
    (folder / "step=9.ckpt").write_bytes(b"PK\x03\x04 cut short")
    damaged = folder / "other.ckpt"
    damaged.write_bytes(b"")
    with pytest.raises(LMTrainError) as refused:
        read_checkpoint_file(damaged)
    assert one_line(refused).endswith(f"pass another checkpoint, e.g. ckpt_path={best}")
    best.unlink()
    copy = folder / "mine.ckpt"  # a whole checkpoint under a name of the user's: still named
    shutil.copyfile(saved, copy)
    with pytest.raises(LMTrainError) as refused:
        read_checkpoint_file(damaged)
    assert one_line(refused).endswith(f"pass another checkpoint, e.g. ckpt_path={copy}")
    shutil.copyfile(saved, best)
    os.utime(best, (1e9, 1e9))  # older than mine.ckpt: named first all the same
    with pytest.raises(LMTrainError) as refused:
        read_checkpoint_file(damaged)
    assert one_line(refused).endswith(f"pass another checkpoint, e.g. ckpt_path={best}")
    last = folder / "last.ckpt"  # moved aside, resume= takes the newest: mine.ckpt, so named
    last.write_bytes(b"")
    with pytest.raises(LMTrainError) as refused:
        read_checkpoint_file(last)
    assert (
        f"ckpt_path=last then go on from mine.ckpt (eval, generate, export: ckpt_path={copy})"
        in (one_line(refused))
    )
