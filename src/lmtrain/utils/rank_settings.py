"""What a rank's run settings are, for comparing them between ranks, and the one line that names
the settings that differ.

torchrun on several nodes (or one command per rank) and SLURM start every node from its own
command line, and nothing made the nodes agree on it: a `trainer.max_steps` typed on one node
only hung the run after a step (a collective one rank made alone), a `data.batch_size` of its
own trained on other numbers than the run reported, exit 0, and another model size ended in
torch's traceback. `SameSettingsOnEveryRank` gathers `rank_settings` from every rank and refuses
the run with `settings_differ` before any step.

The settings are the composed config as written (interpolations left unresolved): what the
command line and the config files said. A value each process works out for itself (`${now:...}`,
a folder under `${paths.data_dir}`) compares alike where the command was the same, and so does
one that really differs (an `${oc.env:...}` of other values on two nodes): that is left to the
checks of what it names. Only the run folder is compared resolved, since the ranks must share
it. Left out (PER_NODE): the settings a node may have of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.utils.redact import redact

# Keys (and key prefixes) a node may set for itself: they never change what the run computes.
PER_NODE = (
    "paths",  # node-local folders (root_dir, data_dir, log_dir); the run folder: RUN_FOLDER_KEY
    "data.cache_dir",  # a node-local token cache, compared by content (SameDataOnEveryRank)
    "data.log_dir",  # paths.log_dir, for the corpus walk
    "data.source.path",  # a node's own copy of the corpus, compared by content likewise
    "data.source.cache_dir",  # datasets' node-local Arrow copy and downloads
    "data.source.download_dir",  # where a node keeps its download
    "data.source.data_files",  # a node's own copy of a dataset's files, compared by content
    "data.tokenizer.name",  # a node's own copy of a tokenizer folder: compared by encoding
    "model.pretrained",  # a node's own copy of the weights: DDP starts from rank 0's
    "logger",  # read by rank 0 alone (W&B entity, MLflow URI: a node's `local` config)
    "data.num_workers",  # how a machine reads and tokenizes, not what it reads:
    "data.pin_memory",
    "data.prepare_workers",
    "data.prepare_chunk_mb",
)
RUN_FOLDER_KEY = "paths.output_dir"  # compared resolved: every rank writes into one run folder
MAX_KEYS = 5  # differing keys named in the line; the rest are counted
MAX_VALUE_CHARS = 60
NOT_SET = "<not set>"


def rank_settings(cfg: DictConfig) -> dict[str, str]:
    """The run's settings as dotted leaf keys and their values as text, secrets redacted."""
    written = redact(OmegaConf.to_container(cfg, resolve=False))
    settings = {
        key: value if isinstance(value, str) else json.dumps(value, default=str)
        for key, value in leaves(written).items()
        if not any(key == k or key.startswith(f"{k}.") for k in PER_NODE)
    }
    output_dir = OmegaConf.select(cfg, RUN_FOLDER_KEY, throw_on_resolution_failure=False)
    if output_dir is not None:
        settings[RUN_FOLDER_KEY] = os.path.realpath(str(output_dir))
    return settings


def leaves(node: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "c": [1]}` as `{"a.b": 1, "c": [1]}`: a list is one value."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def shown(text: str) -> str:
    """A value as the line shows it (a string as is, anything else as JSON: null, [1, 2]), cut
    to MAX_VALUE_CHARS; compared whole (two long lists that differ at their ends)."""
    return text if len(text) <= MAX_VALUE_CHARS else f"{text[: MAX_VALUE_CHARS - 1]}…"


def settings_differ(gathered: list[dict[str, str]]) -> str | None:
    """The line that names the keys whose values differ between ranks (`gathered[rank]`), with
    each value's ranks, rank 0's first; None when every rank has the same settings."""
    keys = sorted({key for settings in gathered for key in settings})
    differ = [k for k in keys if len({s.get(k, NOT_SET) for s in gathered}) > 1]
    if not differ:
        return None
    named = [f"{key} ({values_by_rank([s.get(key, NOT_SET) for s in gathered])})" for key in differ]
    more = len(named) - MAX_KEYS
    listed = ", ".join(named[:MAX_KEYS]) + (f" and {more} more" if more > 0 else "")
    return (
        f"the run's settings differ between ranks: {listed}: give every node the same command "
        "line (the same overrides) and the same configs; only paths.*, logger.*, node-local "
        "copies (data.cache_dir, data.source.path, data.tokenizer.name, model.pretrained) and "
        "data loader workers may differ"
    )


def values_by_rank(values: list[str]) -> str:
    """`rank 0: 4, ranks 1-3: 6`: each value once, after the ranks that have it."""
    ranks: dict[str, list[int]] = {}
    for rank, value in enumerate(values):
        ranks.setdefault(value, []).append(rank)
    return ", ".join(f"{rank_list(r)}: {shown(value)}" for value, r in ranks.items())


def rank_list(ranks: list[int]) -> str:
    """`rank 1`, `ranks 1, 3`, `ranks 4-7`: runs of consecutive ranks as ranges."""
    runs: list[list[int]] = []
    for rank in ranks:
        if runs and rank == runs[-1][-1] + 1:
            runs[-1].append(rank)
        else:
            runs.append([rank])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return f"rank {text}" if len(ranks) == 1 else f"ranks {text}"
