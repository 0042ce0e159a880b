"""`lmtrain.export`: a folder plain transformers loads, with the checkpoint's logits and text.

One tiny model per kind (GPT-2 with a char and with a BPE tokenizer, Llama with BPE) is trained,
exported, and reloaded in a fresh process that cannot import lmtrain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GenerationConfig

from lmtrain.errors import LMTrainError
from lmtrain.export import export, scrub
from lmtrain.generate import generate
from lmtrain.models.checkpoint import load_model
from lmtrain.models.export_folder import export_checkpoint, tried_generation_config
from lmtrain.utils import export_dir
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from lmtrain.utils.export_dir import checked_out_dir
from lmtrain.utils.safe_load import load_torch_file
from tests.helpers import ROOT
from tests.helpers.assertions import one_error_line
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_GPT2, TINY_LLAMA, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import (
    export_tiny,
    model_from_checkpoint,
    reload_in_fresh_process,
    train_tiny,
)

# kind -> (the tiny model, overrides)
KINDS = {
    "gpt2-char": (TINY_GPT2, ["data.tokenizer.kind=char"]),
    "gpt2-bpe": (TINY_GPT2, []),
    "llama-bpe": (TINY_LLAMA, []),
}
PROMPT = "The cat"
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, tuple]:
    """kind -> (checkpoint, export folder), each trained for 20 steps."""
    root = tmp_path_factory.mktemp("export")
    corpus = write_corpus(root / "corpus")
    result = {}
    for kind, (model, overrides) in KINDS.items():
        ckpt = train_tiny(root / kind, data_dir, corpus, *overrides, model=model)
        result[kind] = (ckpt, export_tiny(ckpt, root / f"{kind}-hf", data_dir))
    return result


def greedy_from_cli(ckpt: Path, tmp_path: Path, data_dir: Path, capsys) -> str:
    """What `python -m lmtrain.generate ckpt_path=<ckpt> greedy=true` prints."""
    cfg = compose(
        "generate",
        tmp_path / "generate",
        data_dir,
        f"ckpt_path={ckpt}",
        f"prompt='{PROMPT}'",
        "greedy=true",
        f"max_new_tokens={NEW_TOKENS}",
    )
    capsys.readouterr()
    generate(cfg)
    return capsys.readouterr().out


def test_export_reloads_in_fresh_process_with_same_logits_and_greedy_text(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path, capsys
) -> None:
    ids = list(range(3, 40))
    reloaded = reload_in_fresh_process(
        [(str(folder), PROMPT, ids, NEW_TOKENS) for _, folder in exported.values()]
    )
    for kind, (ckpt, folder) in exported.items():
        theirs = reloaded[str(folder)]
        model, _, _ = model_from_checkpoint(ckpt)
        with torch.inference_mode():
            ours = model(input_ids=torch.tensor([ids])).logits[0]
        torch.testing.assert_close(torch.tensor(theirs["logits"]), ours, rtol=1e-5, atol=1e-5)
        assert theirs["tied"], kind
        assert theirs["tokenizer"] in {"TokenizersBackend", "PreTrainedTokenizerFast"}, kind
        cli_text = greedy_from_cli(ckpt, tmp_path / kind, data_dir, capsys)
        assert cli_text == theirs["text"] + "\n", kind
        assert len(cli_text) > len(PROMPT) + 1, kind


def test_export_folder_holds_clean_weights_card_and_generation_config(
    exported: dict[str, tuple],
) -> None:
    ckpt, folder = exported["gpt2-bpe"]
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert {"tokenizer_config.json", "README.md", "lmtrain.json"} <= names
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no temp left over

    with safe_open(folder / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert keys == set(plain.state_dict()) - {"lm_head.weight"}  # tied: saved once
    assert not any(k.startswith(("model.transformer", "_orig_mod")) for k in keys)

    generation = GenerationConfig.from_pretrained(folder)
    assert generation.do_sample and generation.top_k == 50
    assert generation.eos_token_id == plain.config.eos_token_id

    checkpoint = load_torch_file(ckpt)
    card = (folder / "README.md").read_text()
    metrics = json.loads((ckpt.parent.parent / "metrics.json").read_text())
    assert "library_name: transformers" in card
    assert "TextFilesSource(path=" in card and "| Tokenizer | bpe, " in card
    assert f"| Training steps | {checkpoint['global_step']} |" in card
    assert f"| Tokens seen | {20 * 8 * 32:,} |" in card
    assert f"{metrics['val/loss']:.4f} nats/token (whole val split)" in card

    meta = json.loads((folder / "lmtrain.json").read_text())
    assert meta["run_config"]["data"]["block_size"] == 32
    assert "hydra" not in meta["run_config"]
    assert meta["info"]["global_step"] == 20


def test_export_strips_compile_prefixes(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path
) -> None:
    """A checkpoint of a `torch.compile`-wrapped model (`model._orig_mod.*`) exports clean names."""
    ckpt, folder = exported["llama-bpe"]
    checkpoint = load_torch_file(ckpt)
    checkpoint["state_dict"] = {
        k.replace("model.", "model._orig_mod.", 1): v for k, v in checkpoint["state_dict"].items()
    }
    wrapped = tmp_path / "compiled.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint, wrapped)  # as a compiled run writes it
    out = export_tiny(wrapped, tmp_path / "compiled-hf", data_dir)
    with (
        safe_open(out / "model.safetensors", "pt") as a,
        safe_open(folder / "model.safetensors", "pt") as b,
    ):
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118


def test_export_refuses_to_overwrite_unless_asked(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path, capsys
) -> None:
    """Without overwrite=true: one line. With it, in a clone of a Hugging Face repo holding a
    previous export: the export's own files are replaced (a stale weights shard of it goes), and
    everything else (`.git/`, notes, a folder, a link) is kept byte for byte."""
    ckpt, folder = exported["gpt2-char"]
    with pytest.raises(SystemExit) as exit_info:
        export_tiny(ckpt, folder, data_dir)
    assert exit_info.value.code == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: out_dir={str(folder)!r} exists") and "overwrite=true" in line
    clone = tmp_path / "hub-clone"
    shutil.copytree(folder, clone)
    (clone / ".git" / "objects" / "ab").mkdir(parents=True)
    (clone / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (clone / ".git" / "objects" / "ab" / "cdef").write_bytes(b"\x78\x01 a git object")
    (clone / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (clone / "NOTES.md").write_text("my notes on this model\n")
    (clone / "NOTES-link.md").symlink_to("NOTES.md")
    (clone / "model-00001-of-00002.safetensors").write_bytes(b"a shard of an older export")
    meta = json.loads((clone / "lmtrain.json").read_text())  # which listed it as its own
    meta["files"].append("model-00001-of-00002.safetensors")
    (clone / "lmtrain.json").write_text(json.dumps(meta))
    kept = {k: v for k, v in snapshot(clone).items() if k.startswith((".git", "NOTES"))}
    assert export_tiny(ckpt, clone, data_dir, "overwrite=true") == clone
    assert {k: v for k, v in snapshot(clone).items() if k.startswith((".git", "NOTES"))} == kept
    assert (clone / "NOTES-link.md").is_symlink()
    assert not (clone / "model-00001-of-00002.safetensors").exists()  # the export's: replaced
    fresh = AutoModelForCausalLM.from_pretrained(clone)
    torch.testing.assert_close(fresh.state_dict(), model_from_checkpoint(ckpt)[0].state_dict())
    assert not any(p.name.startswith(f".{clone.name}.") for p in tmp_path.iterdir())


def test_of_two_exports_to_one_new_folder_the_later_is_refused(
    exported: dict[str, tuple], tmp_path: Path
) -> None:
    """Both checked out_dir before their load and verify: the later replaced the earlier's
    folder unseen, and both said they had exported there (red team rev_exrep)."""
    out = tmp_path / "race"
    kinds = ["gpt2-char", "llama-bpe"]

    def export_cli(kind: str) -> subprocess.CompletedProcess[str]:
        ckpt = exported[kind][0]
        return run_cli("export", f"ckpt_path={ckpt}", f"out_dir={out}", f"paths.log_dir={tmp_path}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(kinds, pool.map(export_cli, kinds), strict=True))
    done = [kind for kind, result in results.items() if result.returncode == 0]
    assert len(done) == 1, {kind: r.stderr[-1500:] for kind, r in results.items()}
    (refused,) = set(kinds) - set(done)
    line = one_error_line(results[refused].stderr)
    assert line == (
        f"error: out_dir={str(out)!r} exists and is not empty: pass overwrite=true or another "
        "out_dir"
    )
    model_type = json.loads((out / "config.json").read_text())["model_type"]
    assert model_type == {"gpt2-char": "gpt2", "llama-bpe": "llama"}[done[0]]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".race")] == []


def test_a_lock_on_out_dirs_parent_held_by_no_exporter_is_waited_for_briefly(
    exported: dict[str, tuple], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """`flock <folder> <command>` in a job script holds the lock the export takes for its
    rename: the export waited for it with no end and no word (red team rev_diff10)."""
    monkeypatch.setattr(export_dir, "SWAP_LOCK_WAIT_S", 0.5)
    parent = tmp_path / "shared"
    parent.mkdir()
    held = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        ckpt = str(exported["gpt2-char"][0])
        export_checkpoint(ckpt, str(parent / "model"), root_dir=str(tmp_path))
    finally:
        os.close(held)
    assert (parent / "model" / "config.json").is_file()
    assert f"{parent} is locked by another process: renaming without the lock" in caplog.text


def test_overwrite_replaces_only_the_files_the_previous_export_listed(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path
) -> None:
    """A user's file named like an export's (ema.safetensors, vocab.txt, tokenizer_backup.json)
    is kept; a shard the previous export listed as its own goes. An export made before the list
    (no `files` in lmtrain.json) has every file of an export's name replaced, as before."""
    ckpt, folder = exported["gpt2-char"]
    listed = json.loads((folder / "lmtrain.json").read_text())["files"]
    assert set(listed) == {p.name for p in folder.iterdir()}
    clone = shutil.copytree(folder, tmp_path / "clone")
    meta = json.loads((clone / "lmtrain.json").read_text())
    stale = "model-00001-of-00002.safetensors"
    meta["files"] = [*meta["files"], stale]
    (clone / "lmtrain.json").write_text(json.dumps(meta))
    mine = {
        "ema.safetensors": b"my EMA weights",
        "vocab.txt": b"my words",
        "tokenizer_backup.json": b"{}",
    }
    for name, content in {**mine, stale: b"a shard of the previous export"}.items():
        (clone / name).write_bytes(content)
    export_tiny(ckpt, clone, data_dir, "overwrite=true")
    assert {name: (clone / name).read_bytes() for name in mine} == mine
    assert not (clone / stale).exists()
    assert json.loads((clone / "lmtrain.json").read_text())["files"] == listed

    del meta["files"]  # an export from before the list
    (clone / "lmtrain.json").write_text(json.dumps(meta))
    export_tiny(ckpt, clone, data_dir, "overwrite=true")
    assert not any((clone / name).exists() for name in mine)


def test_the_generation_trial_of_a_re_export_runs_one_token(exported: dict[str, tuple]) -> None:
    """Re-exporting a folder whose generation_config.json sets max_new_tokens (a LoRA base, a
    hub model): generate filled what the one-token trial left unset from it, and ran that many
    forward passes with the source's settings, not the ones being saved (red team rev_exrep)."""
    loaded = load_model(exported["gpt2-char"][1])
    source_defaults = loaded.model.generation_config
    source_defaults.max_new_tokens = 40  # as such a folder's generation_config.json loads
    calls = []
    hook = loaded.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        config = tried_generation_config(loaded, {"do_sample": False, "max_new_tokens": 5})
    finally:
        hook.remove()
    assert len(calls) == 1
    assert config.max_new_tokens == 5 and not config.do_sample
    assert loaded.model.generation_config is source_defaults


def test_an_out_dir_that_is_a_mount_point_is_one_line(exported: dict[str, tuple]) -> None:
    """A container's volume as out_dir: the export, made beside out_dir and renamed into place,
    failed only after loading and checking the model (EBUSY) (red team rev_exrep). Folders one
    cannot write: tests/test_foreign_run_folders.py."""
    with pytest.raises(LMTrainError, match=r"out_dir='/proc' is a mount point, and an export"):
        checked_out_dir("/proc", str(exported["gpt2-char"][0]), str(ROOT), overwrite=True)


def test_scrub_drops_hydra_and_secret_keys() -> None:
    config = {
        "hydra": {"run": {}},
        "logger": {"wandb": {"api_key": "k", "project": "p"}},
        "x": [{"hf_token": "t", "auth_header": "a", "data": 1}],
        "data": {"tokenizer": {"kind": "bpe"}},
    }
    assert scrub(config) == {
        "logger": {"wandb": {"project": "p"}},
        "x": [{"data": 1}],
        "data": {"tokenizer": {"kind": "bpe"}},
    }


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: a folder maps to "", a file to its content's hash."""
    return {
        str(p.relative_to(root)): "" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def run_copy(exported: dict[str, tuple], tmp_path: Path) -> Path:
    """A copy of a trained run laid out as the CLI writes it, `.hydra/` included:
    tmp_path/user/logs/train/runs/<time>/{.hydra, checkpoints/last.ckpt, metrics.json}."""
    ckpt, _ = exported["gpt2-char"]
    run = tmp_path / "user" / "logs" / "train" / "runs" / "2025-01-01_00-00-00_000000"
    shutil.copytree(ckpt.parent.parent, run)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text("task_name: train\n")
    return run


def test_export_never_replaces_runs_checkpoints_or_user_files(
    run_copy: Path, tmp_path: Path
) -> None:
    """overwrite=true pointed at what holds the checkpoint or at user files: one line, exit 1,
    and every file byte for byte as it was."""
    user = tmp_path / "user"  # everything a refused export must leave as it is
    (user / "notes").mkdir()
    (user / "notes" / "notes.txt").write_text("my notes\n")
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    cases = {
        run_copy: "(the checkpoint being exported)",
        run_copy / "checkpoints": "(the checkpoint being exported)",
        user / "logs": "(the checkpoint being exported)",
        user / "notes": "is not an lmtrain export",
    }
    before = snapshot(user)

    def export_to(out_dir: Path) -> subprocess.CompletedProcess[str]:
        logs = tmp_path / "export-logs" / out_dir.name  # the export's own run folder
        overrides = [f"ckpt_path={ckpt}", f"out_dir={out_dir}", f"paths.log_dir={logs}"]
        return run_cli("export", *overrides, "overwrite=true", timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:  # ~10 s of startup each, two at a time
        results = dict(zip(cases, pool.map(export_to, cases), strict=True))
    for out_dir, fragment in cases.items():
        result = results[out_dir]
        assert result.returncode == 1, (out_dir, result.stderr[-3000:])
        line = one_error_line(result.stderr)
        assert line.startswith(f"error: out_dir={str(out_dir)!r} ") and fragment in line, line
    assert snapshot(user) == before
    assert {".hydra/config.yaml", "checkpoints/last.ckpt", "metrics.json"} <= set(
        snapshot(run_copy)
    )


def test_export_never_replaces_other_runs_links_files_or_the_working_directory(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path, capsys, monkeypatch
) -> None:
    """overwrite=true at another run's folder, at a file, at a previous export that holds a run
    folder, is reached through a symbolic link, or is the working directory (out_dir=.)."""
    ckpt, folder = exported["gpt2-char"]  # folder: a previous export
    eval_run = tmp_path / "logs" / "eval" / "runs" / "2025-01-02_00-00-00_000000"
    (eval_run / ".hydra").mkdir(parents=True)
    (eval_run / "metrics.json").write_text('{"val/loss": 1.0}\n')
    (tmp_path / "a-file").write_text("not a folder\n")
    previous = tmp_path / "previous"
    shutil.copytree(folder, previous)
    (previous / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "link").symlink_to(previous)
    before = snapshot(tmp_path)
    for out_dir, fragment in [
        (eval_run, "is a run folder (it has .hydra)"),
        (tmp_path / "a-file", "is a file, not a folder"),
        (previous, "holds a run folder"),
        (tmp_path / "link", "is a symbolic link"),
    ]:
        with pytest.raises(SystemExit):
            export_tiny(ckpt, out_dir, data_dir, "overwrite=true")
        assert fragment in one_error_line(capsys.readouterr().err), out_dir
    runs = {k: v for k, v in snapshot(tmp_path).items() if "-export-run" not in k}
    assert runs == before  # the in-process exports' own run folders aside
    shutil.rmtree(previous / "run")
    kept = snapshot(previous)
    monkeypatch.chdir(previous)
    cfg = compose(
        "export", tmp_path / "run", data_dir, f"ckpt_path={ckpt}", "out_dir=.", "overwrite=true"
    )
    with pytest.raises(SystemExit):
        export(cfg)
    assert "is or contains the working directory" in one_error_line(capsys.readouterr().err)
    assert snapshot(previous) == kept


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_export_removes_leftovers_of_dead_exporters_only(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path
) -> None:
    """`.hf.tmp-<pid>` of an exporter that died goes; those of a live exporter (its pid runs,
    or it holds the folder's lock), and other out_dirs' leftovers, stay. A dead exporter's
    `.hf.old-<pid>` without `hf` is the previous export, put back (test_export_settings.py)."""
    ckpt, _ = exported["gpt2-char"]
    live = subprocess.Popen(["sleep", "120"])
    dead, locked_dead = dead_pid(), dead_pid()
    gone = [tmp_path / f".hf.tmp-{dead}"]
    kept = [tmp_path / f".hf.tmp-{live.pid}", tmp_path / f".hf.tmp-{locked_dead}"]
    kept += [tmp_path / f".other.tmp-{dead}"]
    for leftover in gone + kept:
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"half written")
    lock = os.open(tmp_path / f".hf.tmp-{locked_dead}", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # what a live exporter on another host holds
    try:
        export_tiny(ckpt, tmp_path / "hf", data_dir, "verify=false")
    finally:
        os.close(lock)
        live.kill()
        live.wait()
    assert not any(p.exists() for p in gone)
    assert all((p / "model.safetensors").is_file() for p in kept)


def test_export_killed_midway_leaves_nothing_after_the_next_export(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path
) -> None:
    """kill -9 while the export writes its temporary folder; the next export cleans it up."""
    ckpt, _ = exported["gpt2-char"]
    out_dir = tmp_path / "hf"
    command = [sys.executable, "-m", "lmtrain.export", f"ckpt_path={ckpt}", f"out_dir={out_dir}"]
    command += [f"paths.log_dir={tmp_path / 'logs'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    exporter = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    tmp = tmp_path / f".hf.tmp-{exporter.pid}"
    deadline = time.monotonic() + 120
    while not tmp.exists() and exporter.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    exporter.send_signal(signal.SIGKILL)
    _, stderr = exporter.communicate()
    assert exporter.returncode == -signal.SIGKILL, stderr[-3000:]
    assert tmp.is_dir() and not out_dir.exists()  # killed while writing, as intended

    export_tiny(ckpt, out_dir, data_dir, "verify=false")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".hf.")] == []
    assert (out_dir / "model.safetensors").is_file()


def test_export_files_follow_the_umask(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path
) -> None:
    """safetensors writes model.safetensors 0600 whatever the umask: the export must not."""
    ckpt, _ = exported["gpt2-char"]
    previous = os.umask(0o022)
    try:
        for umask in (0o022, 0o027):
            os.umask(umask)
            folder = export_tiny(ckpt, tmp_path / "hf", data_dir, "verify=false", "overwrite=true")
            modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
            assert "model.safetensors" in modes
            assert modes == dict.fromkeys(modes, 0o666 & ~umask), oct(umask)
            assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    finally:
        os.umask(previous)
