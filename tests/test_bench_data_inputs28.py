"""bench_data.py's arguments and --corpus-dir, its PSS key, and the raw loop's clipping (bench28).

Each bad value below ended in a traceback, some only after the corpus was built and the BPE
trained; a `stdlib_<N>mb/` of the user's made the build fail and left a 100 MB temporary copy. The
raw loop of bench.py crashed on `trainer.gradient_clip_val=null` after Lightning's runs, and would
have zeroed every gradient at 0, where Lightning does not clip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from omegaconf import OmegaConf

from tests.helpers.corpora import write_play
from tests.helpers.scripts import load_script, run_script
from tests.test_bench_scripts import SMALL, assert_usage_error


def user_folder(corpus_dir: Path, name: str) -> Path:
    """`corpus_dir/name/` holding a file of the user's."""
    (corpus_dir / name).mkdir(parents=True)
    (corpus_dir / name / "mine.txt").write_text("my notes\n")
    return corpus_dir


@pytest.mark.parametrize(
    ("arg", "fragment"),
    [
        ("--vocab-size=0", "--vocab-size 0: pass 257 to"),
        ("--sample-mb=0", "--sample-mb 0.0: pass a positive size"),
        ("--sample-mb=nan", "--sample-mb nan: pass a positive size"),
        ("--chunk-mb=-1", "--chunk-mb -1.0: pass a positive size"),
        ("file", "is not a folder"),
        ("stdlib_1mb", "stdlib_1mb holds mine.txt, not this script's"),
        ("bpe_300", "bpe_300 holds mine.txt, not this script's"),
    ],
)
def test_bench_data_refuses_a_bad_argument_before_building_anything(
    arg: str, fragment: str, tmp_path: Path
) -> None:
    """One usage line naming the option; the user's folder as it was, nothing built beside it."""
    corpus_dir = tmp_path / "corpora"
    args = [*SMALL["bench_data"], f"--out={tmp_path / 'latest.json'}"]
    if arg == "file":
        corpus_dir.write_text("not a folder\n")
    elif arg.startswith(("stdlib", "bpe")):
        user_folder(corpus_dir, arg)
    else:
        args.append(arg)
    result = run_script("bench_data", *args, f"--corpus-dir={corpus_dir}", cwd=tmp_path)
    assert_usage_error(result, "bench_data", fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["corpora"] if "=" not in arg else [])
    if corpus_dir.is_dir():
        assert [p.name for p in corpus_dir.iterdir()] == [arg]  # no corpus, no temporary copy
        assert (corpus_dir / arg / "mine.txt").read_text() == "my notes\n"


def test_a_failed_corpus_build_keeps_the_users_files_and_leaves_no_temporary_copy(
    tmp_path: Path,
) -> None:
    """The rename over a folder of the user's failed: their file stays, the copy goes."""
    bench_data = load_script("bench_data")
    corpus_dir = user_folder(tmp_path / "corpora", "stdlib_1mb")
    with pytest.raises(OSError):
        bench_data.build_corpus(corpus_dir / "stdlib_1mb", 1)
    assert [p.name for p in corpus_dir.iterdir()] == ["stdlib_1mb"]
    assert [p.name for p in (corpus_dir / "stdlib_1mb").iterdir()] == ["mine.txt"]


def test_bench_data_names_the_pss_peak_for_what_it_is_and_drops_the_old_key(
    tmp_path: Path,
) -> None:
    """`prepare_peak_rss_mb` held the PSS peak beside `prepare_peak_rss_sum_mb`, the RSS sum."""
    out = tmp_path / "latest.json"
    out.write_text(json.dumps({"prepare_peak_rss_mb": 1.0, "overhead_ratio": {}}))
    corpus_dir = tmp_path / "corpora"
    args = [*SMALL["bench_data"], f"--out={out}", f"--corpus-dir={corpus_dir}"]
    result = run_script("bench_data", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    size = report["data_prepare"]["sizes_mb"]["1"]
    assert "prepare_peak_rss_mb" not in report and "prepare_peak_rss_mb" not in size
    assert report["prepare_peak_pss_mb"] == size["prepare_peak_pss_mb"] > 0
    assert size["prepare_peak_rss_sum_mb"] > 0 and "overhead_ratio" in report
    assert sorted(p.name for p in corpus_dir.iterdir()) == ["bpe_300", "stdlib_1mb"]


def with_grads(grads: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    """Parameters holding copies of `grads` as their gradients."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    return params


def lightning_clipped(grads: list[torch.Tensor], **settings: object) -> list[torch.Tensor]:
    """`grads` after Lightning's own clipping under Trainer(**settings)."""
    params = with_grads(grads)
    module = LightningModule()
    module.trainer = Trainer(logger=False, enable_checkpointing=False, **settings)
    module.clip_gradients(torch.optim.SGD(params, lr=0.1))
    return [p.grad for p in params]


def raw_clipped(grads: list[torch.Tensor], **settings: object) -> list[torch.Tensor]:
    """`grads` after the raw loop's clipping under the same trainer settings."""
    load_script("bench")
    clip = sys.modules["bench_raw"].gradient_clipping(OmegaConf.create(settings))
    params = with_grads(grads)
    if clip is not None:
        clip(params)
    return [p.grad for p in params]


@pytest.mark.parametrize(
    "settings",
    [
        {"gradient_clip_val": None},
        {"gradient_clip_val": 0},
        {"gradient_clip_val": 0.5},
        {"gradient_clip_val": 0.5, "gradient_clip_algorithm": "norm"},
        {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
        {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "VALUE"},
    ],
)
def test_the_raw_loop_clips_exactly_as_lightning(settings: dict[str, object]) -> None:
    torch.manual_seed(0)
    grads = [torch.randn(4, 3), torch.randn(3)]
    expected = lightning_clipped(grads, **settings)
    for raw, lightning in zip(raw_clipped(grads, **settings), expected, strict=True):
        assert torch.equal(raw, lightning), settings


def test_the_raw_loop_runs_with_clipping_turned_off(tmp_path: Path) -> None:
    """`trainer.gradient_clip_val=null` passed every check, then the raw loop's TypeError came
    after Lightning's runs, losing them."""
    bench = load_script("bench")
    play = write_play(tmp_path / "play.txt", speeches=30)
    bench.read_corpus_from(play)
    extra = [f"paths.data_dir={tmp_path / 'data'}", "logger=csv", "trainer.gradient_clip_val=null"]
    extra += ["model.config.n_layer=1", "model.config.n_embd=32", "model.config.n_head=2"]
    cfg = bench.compose_config("shakespeare_char", 2, tmp_path / "run", extra)
    bench.prepare_corpus(cfg, play)
    assert bench.run_raw(cfg, 1) > 0
