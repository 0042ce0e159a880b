"""evaluate, generate and export take from Python what train takes, and lines name Python's keys.

docs/python.md: "`compose(..., return_hydra_config=True)` works (Hydra's node is left out of the
run), and so does a plain dict of the config". Only `train` normalized its config: the other
three were a ValueError traceback on a dict, generate refused Hydra's node with a line about
`hydra.sweep.subdir`, and export refused a `pathlib.Path` out_dir as "not a folder path". Lines
that tell how to go on named the command line's `hydra.run.dir` to a caller whose run folder is
`paths.output_dir`. The script runs in a process of its own, as a notebook's: no Hydra job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.compose import TINY
from tests.helpers.corpora import one_file_corpus

SCRIPT = """
import json, sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from lmtrain.eval import evaluate
from lmtrain.export import export
from lmtrain.generate import generate
from lmtrain.train import train

work, corpus, tiny = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
data = [f"paths.data_dir={work / 'data'}", "data=text_files", f"data.source.path={corpus}",
        "data.tokenizer.kind=char", "samples.prompts=[the]"]

def composed(name, *overrides, hydra_node=False):
    with initialize_config_dir(config_dir=str(Path.cwd() / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=[*overrides],
                       return_hydra_config=hydra_node)

run = work / "run"
train(composed("train", *tiny, *data, "logger=csv", f"paths.output_dir={run}"))
ckpt = run / "checkpoints" / "last.ckpt"
results = {}
cfg = composed("eval", f"ckpt_path={ckpt}", f"paths.output_dir={work / 'eval'}",
               "trainer.enable_progress_bar=false")
results["eval"] = evaluate(cfg=OmegaConf.to_container(cfg, resolve=False))["val/loss"]
results["train"] = json.loads((run / "metrics.json").read_text())["val/loss"]
cfg = composed("generate", f"ckpt_path={ckpt}", f"paths.output_dir={work / 'gen'}",
               "max_new_tokens=5", "prompt=the", "greedy=true", hydra_node=True)
results["generate"] = generate(cfg)
cfg = composed("generate", f"ckpt_path={ckpt}", f"paths.output_dir={work / 'gen2'}",
               "max_new_tokens=5", "prompt=the", "greedy=true")
results["generate_dict"] = generate(OmegaConf.to_container(cfg, resolve=False))
cfg = composed("export", f"ckpt_path={ckpt}", f"paths.output_dir={work / 'exp'}")
cfg.out_dir = work / "exported"
results["export"] = str(export(cfg))
print(json.dumps(results))
sys.stdout.flush()
new = work / "new"
train(composed("train", *tiny, *data, "logger=csv", f"paths.output_dir={new}", "ckpt_path=last"))
"""


def test_eval_generate_and_export_take_a_dict_hydras_node_and_a_path_and_lines_name_python_keys(
    tmp_path: Path,
) -> None:
    corpus = one_file_corpus(tmp_path / "corpus")
    script = tmp_path / "tasks.py"
    script.write_text(SCRIPT)
    tiny = [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(corpus), json.dumps(tiny)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["eval"] == results["train"]  # the whole val split, the same weights
    assert results["generate"] == results["generate_dict"] and len(results["generate"]) == 1
    assert results["generate"][0].startswith("the")
    exported = Path(results["export"])
    assert exported == tmp_path / "exported" and (exported / "config.json").is_file()
    # The last train() is refused (nothing to resume in a new folder), naming Python's key.
    assert done.returncode == 1, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ckpt_path=last found no"), error
    assert "paths.output_dir=<run folder>" in error and "hydra.run.dir" not in error, error
