"""Names in a training config that name nothing: top-level keys no code reads, and metrics
that no code logs.

Hydra composes whatever it is given, and a key that no code reads is dropped without a word.
Two ways to get one are common. A config of a group that should apply at the top (an
experiment, `configs/local/default.yaml`) written without `# @package _global_` puts its keys
under `experiment:` or `local:`, so the run ignores all of them and exits 0 (a typical quick
experiment sets only keys). And nanoGPT-style keys (`learning_rate=...`, `+max_iters=...`) or a
typo (`+sample.prompts=...`) sit beside the real ones. Both are refused before any work. A
callback's `monitor: val_loss` (for val/loss) was a Lightning error at the first validation,
after all the steps before it, with no checkpoint written.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig

from lmtrain.utils.checks import Problems

# configs/train.yaml's own keys and the groups whose configs sit under their own name.
TRAIN_KEYS = (
    "task_name",
    "tags",
    "seed",
    "resume",
    "ckpt_path",
    "overwrite_run",
    "global_batch_size",
    "optimized_metric",
    "samples",
    "data",
    "model",
    "callbacks",
    "logger",
    "trainer",
    "paths",
)
# What CausalLMModule logs at each validation, the names a `monitor` usually means.
VAL_METRICS = ("val/loss", "val/ppl", "val/bpb")
# Groups whose configs apply at the top (`# @package _global_`): never a node of their own.
GLOBAL_GROUPS = ("experiment", "hparams_search", "debug", "local")


def check_top_level_keys(cfg: Mapping[str, Any], problems: Problems) -> None:
    """Each top-level key of `cfg` (a composed training config) that no code reads."""
    for key in cfg:
        if key in TRAIN_KEYS or key == "hydra":  # `hydra`: Hydra's own (in tests' composes)
            continue
        if key in GLOBAL_GROUPS and isinstance(cfg[key], Mapping):
            problems.add(
                f"the {key} config {group_choice(key)}.yaml has no `# @package _global_` first "
                f"line, so its keys ({', '.join(map(str, cfg[key]))}) landed under `{key}:`, "
                "where nothing reads them: add that line at the top of the file"
            )
            continue
        close = difflib.get_close_matches(str(key), TRAIN_KEYS, n=1)
        advice = f"did you mean {close[0]}?" if close else f"drop it (~{key})"
        problems.add(
            f"{key} is not a setting of lmtrain.train, so nothing would read it: {advice} "
            "(settings of a part go under it: model.optimizer.lr, trainer.max_steps, ...)"
        )


def group_choice(group: str) -> str:
    """The config picked for `group` in this Hydra run (`<name>` outside one)."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return "<name>"


def check_metric_names(
    callbacks: Mapping[str, Any], optimized_metric: Any, problems: Problems
) -> None:
    """`monitor` of each callback config in `callbacks` (the resolved group), and
    `optimized_metric`, that look like a misspelt metric of ours (`val_loss`). Other names pass:
    a module of one's own may log more."""
    named = {
        f"callbacks.{name}.monitor": node.get("monitor")
        for name, node in callbacks.items()
        if isinstance(node, Mapping)
    }
    named["optimized_metric"] = optimized_metric
    for key, value in named.items():
        if not isinstance(value, str) or value in VAL_METRICS:
            continue
        close = difflib.get_close_matches(value, VAL_METRICS, n=1, cutoff=0.75)
        if close:
            problems.add(f"{key}={value!r} is not a metric lmtrain logs: did you mean {close[0]}?")
