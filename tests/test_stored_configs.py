"""A config read from disk is data, not code (utils/stored_targets.py).

A shared run folder (`resume=`), checkpoint or export (eval, export) names `_target_`s: only
those the project's configs name, or the user types on the command line, are ever built. The
hostile inputs are built as the red team built them: a `pathlib.Path.touch` target whose
`_args_` is a marker file, which exists iff something instantiated it. Also: a resumed run writes
only into its own folder, eval's token cache goes where this command's `paths` say, an export
does not advertise custom code it does not carry, and a LoRA folder's pickled base is named.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model
from lmtrain.models.checkpoint_contents import CHECKPOINT_KEY
from lmtrain.models.export_folder import export_checkpoint
from lmtrain.utils.stored_targets import allowed, untrusted
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.runs import eval_tiny, export_tiny

NO_CONFIG = "which no config of this project names"


def payload(marker: Path) -> dict[str, Any]:
    """A node that, instantiated, creates `marker`."""
    return {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished tiny run (4 steps, checkpoints/last.ckpt) started from the CLI."""
    root = tmp_path_factory.mktemp("stored")
    run = root / "run"
    cli = tiny_cli(root, data_dir, "logger=none", f"hydra.run.dir={run}")
    result = run_cli("train", *cli)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def shared_copy(run: Path, target: Path, **changes: Any) -> Path:
    """A copy of `run` whose .hydra/config.yaml has `changes` (dotted key -> value) made."""
    shutil.copytree(run, target)
    record = target / ".hydra" / "config.yaml"
    config = OmegaConf.load(record)
    for key, value in changes.items():
        OmegaConf.update(config, key, value, merge=False, force_add=True)
    OmegaConf.save(config, record)
    return target


@pytest.mark.parametrize(
    "placement",
    ["callbacks.pwn", "data.source", "callbacks.pwn_created"],
)
def test_resume_refuses_a_target_of_the_run_folder_that_no_config_names(
    tmp_path: Path, trained: Path, placement: str
) -> None:
    marker = tmp_path / "pwned"
    if placement == "callbacks.pwn_created":  # a node made by a resolver, not written out
        made = f"${{oc.create:{{_target_:pathlib.Path.touch,_args_:['{marker}']}}}}"
        run = shared_copy(trained, tmp_path / "run", **{"callbacks.pwn": made})
        placement = "callbacks.pwn"
    else:
        run = shared_copy(trained, tmp_path / "run", **{placement: payload(marker)})
    before = files_of(run / ".hydra")
    result = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert_one_line_error(
        result,
        f"resume={run}: its .hydra/config.yaml names {placement}._target_=pathlib.Path.touch",
        NO_CONFIG,
        f"++{placement}._target_=pathlib.Path.touch on the command line",
    )
    assert not marker.exists()
    assert files_of(run / ".hydra") == before


def test_resume_refuses_a_checkpoint_folder_outside_the_run(tmp_path: Path, trained: Path) -> None:
    """The saved dirpath would write last.ckpt into another run's checkpoints/."""
    victim = tmp_path / "other-run" / "checkpoints"
    victim.mkdir(parents=True)
    key = "callbacks.model_checkpoint.dirpath"
    run = shared_copy(trained, tmp_path / "run", **{key: str(victim)})
    result = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert_one_line_error(result, f"sets {key}={victim}, outside the run folder {run.resolve()}")
    assert list(victim.iterdir()) == []


CSV_LOGGER = {"_target_": "lmtrain.utils.csv_history.ResumableCSVLogger", "version": ""}


@pytest.mark.parametrize("where", ["checkpoint filename", "filename field", "logger name"])
def test_resume_refuses_a_name_that_climbs_out_of_the_run_folder(
    tmp_path: Path, trained: Path, where: str
) -> None:
    """Joined onto a folder inside the run, a saved checkpoint `filename` or logger `name`
    with `..` wrote another run's last.ckpt, or over a folder elsewhere. Lightning formats a
    filename's fields as `{0[<field>]}`: a `]` in one reads attributes, whose text held `.`."""
    victim = tmp_path / "other-run" / "checkpoints"
    victim.mkdir(parents=True)
    key = "callbacks.model_checkpoint.filename"
    if where == "checkpoint filename":
        value = "../../other-run/checkpoints/last"
        run = shared_copy(trained, tmp_path / "run", **{key: value})
    elif where == "filename field":
        value = "{epoch].__init__.__doc__[15}x/last"
        run = shared_copy(trained, tmp_path / "run", **{key: value})
    else:
        key, value = "logger.csv.name", "../other-run/checkpoints"
        csv = {**CSV_LOGGER, "save_dir": "${paths.output_dir}", "name": value}
        run = shared_copy(trained, tmp_path / "run", **{"logger.csv": csv})
    result = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert_one_line_error(result, f"sets {key}={value}, outside the run folder", f"++{key}=<name>")
    assert list(victim.iterdir()) == []


def test_resume_takes_a_logger_name_made_by_hydras_resolver(tmp_path: Path, trained: Path) -> None:
    """`${hydra:job.name}` resolves only in a Hydra job: the check resolves it as the run will,
    instead of refusing it as a name it cannot read."""
    csv = {**CSV_LOGGER, "save_dir": "${paths.output_dir}", "name": "csv_${hydra:job.name}"}
    run = shared_copy(trained, tmp_path / "run", **{"logger.csv": csv})
    result = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "csv_train" / "metrics.csv").is_file()


def test_resume_of_a_users_own_target_needs_it_typed_again(tmp_path: Path, trained: Path) -> None:
    """A target only the run's record names is refused; typed again, the run resumes."""
    mine = {"_target_": "lmtrain.callbacks.resume.ExactResume"}
    run = shared_copy(trained, tmp_path / "run", **{"callbacks.mine": mine})
    typed = "++callbacks.mine._target_=lmtrain.callbacks.resume.ExactResume"
    refused = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert_one_line_error(refused, "callbacks.mine._target_=lmtrain.callbacks.resume", typed)

    resumed = run_cli("train", f"resume={run}", "trainer.max_steps=6", typed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6


def test_untrusted_walks_nodes_resolvers_make_and_positional_args(tmp_path: Path) -> None:
    """Fast: what the check finds, and what the config search path (a user's folder) adds."""
    own = tmp_path / "configs" / "local"
    own.mkdir(parents=True)
    (own / "default.yaml").write_text("x:\n  _target_: my.pkg.Thing\n  _args_: [1]\n")
    sources = OmegaConf.create([{"schema": "file", "path": str(own.parent), "provider": "main"}])
    allow = allowed(sources, typed=[{"_target_": "typed.Target"}])
    config = OmegaConf.create(
        {
            "a": {"_target_": "my.pkg.Thing", "_args_": [2]},  # a user's config passes _args_
            "b": {"_target_": "typed.Target"},
            "c": {"_target_": "torch.optim.AdamW", "_args_": ["/x"]},  # no config passes any
            "d": "${oc.select:nowhere,{_target_:os.system}}",
            "e": {"_target_": "${a._target_}"},  # a target must be a plain string
            "f": [{"_target_": "builtins.eval"}],
        }
    )
    found = untrusted(config, allow)
    assert found == [
        ("c._args_", ["/x"]),
        ("d._target_", "os.system"),
        ("e._target_", "${a._target_}"),
        ("f.0._target_", "builtins.eval"),
    ]
    assert untrusted(OmegaConf.create({"a": {"_target_": "my.pkg.Thing"}}), allowed()) != []


@pytest.fixture(scope="module")
def exported(trained: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(
        trained / "checkpoints" / "last.ckpt", tmp_path_factory.mktemp("exp") / "hf", data_dir
    )


def tampered_checkpoint(trained: Path, target: Path, **data: Any) -> Path:
    """The run's last.ckpt with `data` set in its stored run config's data node."""
    checkpoint = torch.load(
        trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    checkpoint[CHECKPOINT_KEY]["run_config"]["data"].update(data)
    torch.save(checkpoint, target)
    return target


def test_eval_refuses_a_checkpoints_stored_data_target(tmp_path: Path, trained: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tampered_checkpoint(trained, tmp_path / "evil.ckpt", source=payload(marker))
    result = run_cli(
        "eval",
        f"ckpt_path={evil}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer.enable_progress_bar=false",
    )
    assert_one_line_error(
        result, f"ckpt_path='{evil}': its run config names data.source._target_=pathlib.Path.touch"
    )
    assert not marker.exists()


def test_export_copies_a_stored_data_target_that_eval_of_the_export_refuses(
    tmp_path: Path, trained: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Export and generate never build the data config (a source of one's own, named by a
    hydra.searchpath config, is legitimate there); eval checks it before it builds anything."""
    marker = tmp_path / "pwned"
    evil = tampered_checkpoint(trained, tmp_path / "evil.ckpt", source=payload(marker))
    out = tmp_path / "out"
    export_checkpoint(str(evil), str(out), root_dir=str(tmp_path))
    assert "data.source._target_=pathlib.Path.touch" in caplog.text  # the warning names it
    assert load_model(out).run_config["data"]["source"]["_target_"] == "pathlib.Path.touch"
    result = run_cli(
        "eval",
        f"ckpt_path={out}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer.enable_progress_bar=false",
    )
    assert_one_line_error(result, f"ckpt_path='{out}': its run config names data.source._target_")
    assert not marker.exists()


def test_eval_reuses_the_training_cache_from_another_data_dir(
    tmp_path: Path, trained: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The training's cache is read where the run config says when it is sound and made with
    the model's tokenizer; nothing is tokenized again, and nothing is built under data_dir."""
    mine = tmp_path / "mine"
    metrics = eval_tiny(trained / "checkpoints" / "last.ckpt", tmp_path / "eval", mine)
    assert metrics["val/loss"] > 0
    assert "No token cache" not in caplog.text
    assert not (mine / "cache").exists() or not any((mine / "cache").iterdir())


def test_eval_keeps_the_token_cache_where_its_own_paths_say(tmp_path: Path, trained: Path) -> None:
    """The run config's cache_dir is the training machine's: eval builds under its data_dir."""
    elsewhere = tmp_path / "elsewhere"
    ckpt = tampered_checkpoint(trained, tmp_path / "moved.ckpt", cache_dir=str(elsewhere))
    mine = tmp_path / "mine"
    metrics = eval_tiny(ckpt, tmp_path / "eval", mine)
    assert metrics["val/loss"] > 0
    assert not elsewhere.exists()
    assert [p.name for p in (mine / "cache").iterdir() if p.is_dir()]


def test_export_drops_auto_map_of_code_it_does_not_carry(tmp_path: Path, exported: Path) -> None:
    folder = shutil.copytree(exported, tmp_path / "automap")
    for name, auto_map in [
        ("config.json", {"AutoModelForCausalLM": "evil.EvilModel"}),
        ("tokenizer_config.json", {"AutoTokenizer": ["evil.EvilTok", None]}),
    ]:
        document = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**document, "auto_map": auto_map}))
    out = export_tiny(folder, tmp_path / "again", tmp_path / "data")
    for name in ("config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((out / name).read_text()), name


class Pickled:
    """Pickles as `Path.touch(marker)`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_lora_folder_whose_base_holds_a_pickle_names_the_base(
    tmp_path: Path, exported: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    marker = tmp_path / "pwned"
    base = shutil.copytree(exported, tmp_path / "base")
    weights = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    torch.save({**weights, "evil": Pickled(marker)}, base / "pytorch_model.bin")
    adapters = tmp_path / "adapters"
    model = AutoModelForCausalLM.from_pretrained(exported)
    get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(adapters)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(exported / name, adapters / name)
    config = json.loads((adapters / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (adapters / "adapter_config.json").write_text(json.dumps(config))

    with pytest.raises(LMTrainError) as refused:
        load_model(adapters)
    message = str(refused.value)  # not "ckpt_path='<adapters>' holds pickled objects"
    assert message.startswith(
        f"the base model '{base}' of ckpt_path='{adapters}' (adapter_config.json) holds pickled "
    )
    assert not marker.exists()


def test_eval_refuses_a_stored_interpolation_that_makes_a_node(
    tmp_path: Path, trained: Path
) -> None:
    """A stored run config is plain data (saved resolved), but OmegaConf resolved a crafted
    `${oc.create:{_target_: ...}}` as eval built its data config: the plain walk had not seen
    the node, and `torch.load(weights_only=False)` unpickled a payload through it."""
    marker = tmp_path / "pwned"
    made = f"${{oc.create:{{_target_:pathlib.Path.touch,_args_:['{marker}']}}}}"
    evil = tampered_checkpoint(trained, tmp_path / "evil.ckpt", source=made)
    result = run_cli(
        "eval",
        f"ckpt_path={evil}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    fragments = ("its run config holds data.source=", "${oc.create:", "an interpolation")
    assert_one_line_error(result, f"ckpt_path='{evil}'", *fragments)
    assert not marker.exists()


def test_resume_refuses_a_node_nested_past_the_walks_depth(tmp_path: Path, trained: Path) -> None:
    """The target walk stopped at 64 levels, and Hydra instantiates nodes at any depth."""
    marker = tmp_path / "pwned"
    node: Any = payload(marker)
    for _ in range(70):
        node = {"a": node}
    corpus = OmegaConf.load(trained / ".hydra" / "config.yaml").data.source.path
    run = shared_copy(trained, tmp_path / "run", **{"data.source.path": [corpus, node]})
    result = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert_one_line_error(result, f"resume={run}: its .hydra/config.yaml names data.source.path")
    assert "nested over 64 levels deep" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("part", ["hf_config", "tokenizer"])
def test_a_checkpoint_asking_for_its_own_code_runs_none_when_answered_yes(
    tmp_path: Path, trained: Path, part: str
) -> None:
    """transformers asks `[y/N]` before it imports a config's auto_map module unless told not
    to: answered y, generate imported the checkpoint's code. A tokenizer's auto_map was refused,
    but in a traceback."""
    marker, code = tmp_path / "pwned", tmp_path / "evilrepo"
    code.mkdir()
    (code / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    checkpoint = torch.load(
        trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    stored = checkpoint[CHECKPOINT_KEY]
    if part == "hf_config":
        stored["hf_config"] = {
            "model_type": "vit",
            "auto_map": {"AutoModelForCausalLM": "evil.EvilModel"},
            "_name_or_path": str(code),
        }
    else:
        files = stored["tokenizer_files"]
        config = json.loads(files["tokenizer_config.json"])
        config |= {"tokenizer_class": "EvilTok", "auto_map": {"AutoTokenizer": [None, "evil.E"]}}
        files["tokenizer_config.json"] = json.dumps(config)
        (code / "evil.py").rename(tmp_path / "evil.py")  # beside nothing: a name only
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    command = ["-m", "lmtrain.generate", f"ckpt_path={evil}", "prompt=ab", "max_new_tokens=2"]
    command.append(f"paths.log_dir={tmp_path / 'logs'}")
    result = subprocess.run(
        [sys.executable, *command], input="y\n", capture_output=True, text=True, cwd=ROOT
    )
    builds = "builds no model" if part == "hf_config" else "tokenizer files build no tokenizer"
    assert_one_line_error(result, f"ckpt_path='{evil}': its", builds)
    assert not marker.exists()


def test_export_of_a_stored_config_of_another_shape_writes_its_card(
    tmp_path: Path, trained: Path
) -> None:
    """A stored `data.source` that is a string, not a mapping: the model card read `.get` of it
    (AttributeError, a traceback). Read as unknown now."""
    odd = tampered_checkpoint(trained, tmp_path / "odd.ckpt", source="my corpus", tokenizer=3)
    out = tmp_path / "out"
    export_checkpoint(str(odd), str(out), root_dir=str(tmp_path))
    card = (out / "README.md").read_text()
    assert "unknown" in card and load_model(out).run_config["data"]["source"] == "my corpus"
