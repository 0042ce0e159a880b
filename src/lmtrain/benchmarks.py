"""Downstream benchmarks (hellaswag, arc_easy, your own tasks) through EleutherAI's
lm-evaluation-harness, run on the model `lmtrain.eval` already holds in memory (lm-eval's `HFLM`
wraps a `PreTrainedModel` instance as well as a hub name: no export step, no second process).

Bad input costs nothing: `load_tasks` runs before the model is loaded (lm-eval installed, every
name known, every task's data found), `tasks_context` before the val split (the context fits the
model and each task's generated tokens), `run_tasks` after it. Results come back flat, as
`lm_eval/<task>/<metric>` floats, for metrics.json and the loggers.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.data.coverage import format_characters
from lmtrain.errors import LMTrainError, find_cause, first_line
from lmtrain.models.export_tokenizer import reading_specials_as_text
from lmtrain.models.hf import context_length
from lmtrain.utils.checks import Problems
from lmtrain.utils.lm_eval_failures import EMPTY_ANSWER_FIX, scoring_error
from lmtrain.utils.lm_eval_logs import TRUNCATING as TRUNCATING  # tests read it here
from lmtrain.utils.lm_eval_logs import quiet_lm_eval
from lmtrain.utils.task_checks import (
    check_fewshot_pools,
    task_yaml_error,
    unparsable_yamls_note,
    warn_unused_lm_eval_keys,
)
from lmtrain.utils.task_pairs import answer_without_tokens
from lmtrain.utils.task_text import unencodable_task_characters

INSTALL_HINT = "pip install -e .[eval]"
# lm-eval's HFLM.max_gen_toks: the tokens it generates where a task's generation_kwargs set none.
HFLM_MAX_GEN_TOKS = 256


@dataclass
class BenchmarkSettings:
    """The eval config's lm-eval keys, checked."""

    tasks: list[str]
    num_fewshot: int | None
    limit: int | float | None  # a count, or a share below 1; None: every example (1.0 too)
    batch_size: int | str
    max_length: int | None
    include_path: str | None
    generation_lengths: dict[str, int] = field(default_factory=dict)  # set by load_tasks
    leaf_tasks: dict[str, Any] = field(default_factory=dict)  # set by load_tasks


def benchmark_settings(cfg: DictConfig) -> BenchmarkSettings | None:
    """The lm-eval settings of an eval config, or None when `tasks` names none.

    The other keys are checked with or without tasks: a bad value is refused either way, and a
    valid one set without tasks is named in a warning (it changes nothing)."""
    tasks = cfg.get("tasks")
    no_tasks = tasks is None or (isinstance(tasks, ListConfig) and len(tasks) == 0)
    problems = Problems()
    if isinstance(tasks, str):  # tasks=hellaswag: one name
        tasks = [tasks]
    names = OmegaConf.to_container(tasks) if isinstance(tasks, ListConfig) else tasks
    valid_names = isinstance(names, list) and all(isinstance(n, str) and n for n in names)
    if not no_tasks and not valid_names:
        problems.add(
            f"tasks={names!r} is not a list of task names: pass tasks=[hellaswag,arc_easy]"
        )
    problems.integer("num_fewshot", cfg.get("num_fewshot"), 0, optional=True)
    limit = cfg.get("limit")
    if isinstance(limit, float):
        problems.number(
            "limit", limit, low=0, high=1, low_open=True, hint=" (a share of each task)"
        )
    else:
        problems.integer("limit", limit, 1, optional=True)
    batch_size = cfg.get("batch_size", 1)
    whole = isinstance(batch_size, int) and not isinstance(batch_size, bool)
    if batch_size != "auto" and not (whole and batch_size >= 1):
        problems.add(
            f"batch_size={batch_size!r} is neither a whole number of at least 1 nor auto: "
            "pass batch_size=8, or batch_size=auto (lm-eval finds the largest that fits)"
        )
    problems.integer("max_length", cfg.get("max_length"), 1, optional=True)
    include_path = cfg.get("include_path")
    if include_path is not None and not Path(str(include_path)).expanduser().is_dir():
        problems.add(
            f"include_path={include_path!r} is not a folder: pass a folder of lm-eval task YAMLs"
        )
    problems.raise_if_any()
    if no_tasks:
        warn_unused_lm_eval_keys(cfg)
        return None
    return BenchmarkSettings(
        tasks=list(names),
        num_fewshot=cfg.get("num_fewshot"),
        limit=every_example_as_none(limit),
        batch_size=batch_size,
        max_length=cfg.get("max_length"),
        include_path=None if include_path is None else str(Path(include_path).expanduser()),
    )


def every_example_as_none(limit: int | float | None) -> int | float | None:
    """`limit` as lm-eval reads it: the share 1.0 (every example) as None. lm-eval takes only a
    float below 1 as a share: 1.0, which our check accepts, would be a count (one example)."""
    return None if isinstance(limit, float) and limit == 1.0 else limit


def load_tasks(settings: BenchmarkSettings) -> list[Any]:
    """lm-eval's Task and Group objects for `settings.tasks`, data loaded; one line when lm-eval
    is missing, a name is unknown, a task's YAML cannot be loaded or its data downloaded, or it
    has fewer few-shot documents than num_fewshot asks for, or generates max_length tokens or
    more (`generation_lengths`, checked again in `tasks_context` when max_length is unset)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise LMTrainError(
            f"tasks={settings.tasks} needs EleutherAI's lm-evaluation-harness, which is not "
            f"installed ({first_line(err)}): install it with `{INSTALL_HINT}`"
        ) from None
    quiet_lm_eval()
    manager = TaskManager(include_path=settings.include_path)
    unknown = [name for name in settings.tasks if name not in manager.all_tasks]
    if unknown:
        near = {n: ", ".join(difflib.get_close_matches(n, manager.all_tasks, n=4)) for n in unknown}
        hints = "; ".join(f"{n!r} (near: {near[n] or 'nothing close'})" for n in unknown)
        where = (
            "" if settings.include_path is None else f" or in include_path={settings.include_path}"
        )
        # lm-eval's index skips a YAML that does not parse: its task reads as unknown.
        skipped = unparsable_yamls_note(settings.include_path)
        raise LMTrainError(
            f"tasks= names tasks lm-eval does not know ({hints}){skipped}: "
            f"{'fix those YAMLs, or ' if skipped else ''}pick names from `lm-eval ls tasks`"
            f"{where}, or put your own task YAMLs in a folder and pass include_path=<folder>"
        )
    loaded, leaf_tasks = [], {}
    for name in settings.tasks:
        try:
            found = manager.load([name])
        except Exception as err:
            offline = find_cause(err, ConnectionError)
            if offline is None:
                index = manager.task_index
                raise task_yaml_error(name, err, index, settings.include_path) or err from None
            raise LMTrainError(
                f"tasks={name} needs its data from the Hugging Face hub ({first_line(offline)}): "
                "run once on a machine that reaches the hub (without HF_HUB_OFFLINE=1) to cache "
                "it, or point a task YAML at local files (dataset_path: json) in include_path"
            ) from None
        # A group or a task by its name; a tag stands for every task it found.
        if name in found["groups"] or name in found["tasks"]:
            loaded.append(found["groups"].get(name, found["tasks"].get(name)))
        else:
            loaded.extend(found["tasks"].values())
        leaf_tasks.update(found["tasks"])
    check_fewshot_pools(leaf_tasks, settings.num_fewshot)
    settings.generation_lengths = generation_lengths(leaf_tasks)
    settings.leaf_tasks = leaf_tasks
    check_generation_room(settings, settings.max_length, "")  # the rest in tasks_context
    return loaded


def generation_lengths(tasks: dict[str, Any]) -> dict[str, int]:
    """Each generate_until task's max_gen_toks, read as HFLM's generate_until reads it."""
    from lm_eval.models.utils import normalize_gen_kwargs

    lengths = {}
    for name, task in tasks.items():
        if task.get_config("output_type") == "generate_until":
            given = task.get_config("generation_kwargs") or {}
            lengths[name] = normalize_gen_kwargs(given, HFLM_MAX_GEN_TOKS)["max_gen_toks"]
    return lengths


def check_generation_room(settings: BenchmarkSettings, max_length: int | None, why: str) -> None:
    """HFLM keeps max_gen_toks of the `max_length` context (`why`: where it came from) to generate
    into: a task keeping it all failed lm-eval's assertion after the val split was scored."""
    lengths = settings.generation_lengths.items()
    full = [f"{n} (max_gen_toks={t})" for n, t in lengths if max_length and t >= max_length]
    if full:
        raise LMTrainError(
            f"tasks={settings.tasks}: {', '.join(full)} would generate as many tokens as "
            f"max_length={max_length}{why} holds, leaving none for the prompt: set max_gen_toks "
            f"below {max_length} in the task's generation_kwargs (lm-eval's default: "
            f"{HFLM_MAX_GEN_TOKS}), or a larger max_length if the model's positions allow"
        )


def tasks_context(
    settings: BenchmarkSettings, config: PretrainedConfig, run_config: dict[str, Any]
) -> int | None:
    """The context lm-eval gives the model: `max_length`, else the block size it was trained
    on (`run_config`: the run's config), else its whole context (None: lm-eval's default), with
    room for each task's generated tokens. Positions past the trained windows never got a
    gradient (GPT-2 learns one embedding per position): lm-eval would have filled them all."""
    limit = context_length(config)
    trained_block_size = (run_config.get("data") or {}).get("block_size")
    max_length = settings.max_length or trained_block_size or limit
    if limit is not None and max_length is not None and max_length > limit:
        raise LMTrainError(
            f"max_length={max_length} is longer than the model's context ({limit}): pass "
            f"max_length={limit} or less, or null for the context it was trained on"
        )
    why = " (the data.block_size it was trained on)" if trained_block_size else " (its context)"
    check_generation_room(settings, max_length, "" if settings.max_length else why)
    return max_length


def check_task_text(settings: BenchmarkSettings, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse, before the val split is scored, a task with characters `tokenizer` has no token
    for (a char tokenizer knows only its corpus's), or an answer it gives no tokens after its
    context (lm-eval's bare assert, late), naming the task and the characters or the answer."""
    as_text = reading_specials_as_text(tokenizer)  # as run_tasks hands it to lm-eval
    found = unencodable_task_characters(settings.leaf_tasks, as_text.encode, settings.limit)
    if found is not None:
        name, characters, context = found
        raise LMTrainError(
            f"tasks={settings.tasks} hold characters the model's tokenizer has no token for, in "
            f"{name}: {format_characters(characters)} (the first in {context!r}): run them on a "
            "model trained with a byte-level BPE tokenizer (data.tokenizer.kind=bpe) or a "
            "pretrained one"
        )
    empty = answer_without_tokens(settings.leaf_tasks, as_text, settings.limit)
    if empty is not None:
        name, context, answer = empty
        raise LMTrainError(
            f"tasks={settings.tasks}: in {name}, the answer {answer!r} adds no tokens after its "
            f"context ...{context[-40:]!r} under the model's tokenizer (an empty choice, or one "
            f"it merges into the context's last token), which lm-eval cannot score: "
            f"{EMPTY_ANSWER_FIX}"
        )


def run_tasks(
    tasks: list[Any],
    settings: BenchmarkSettings,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    max_length: int | None,
    seed: int,
) -> dict[str, float]:
    """Run the loaded `tasks` on `model` (moved to `device`) with `max_length` tokens of
    context (`tasks_context`); flat `lm_eval/<task>/<metric>` floats."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # HFLM encodes plainly: `<|endoftext|>` in a task's text must be characters, as in training
    # and in the export, or a .ckpt and its export would score the same weights differently.
    lm = HFLM(
        pretrained=model.to(device),
        tokenizer=reading_specials_as_text(tokenizer),
        batch_size=settings.batch_size,
        max_length=max_length,
    )
    try:
        results = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=settings.num_fewshot,
            limit=settings.limit,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except Exception as err:
        failure = scoring_error(err, settings.tasks, settings.num_fewshot, lm.max_length)
        if failure is None:
            raise
        print(file=sys.stderr)  # it stopped lm-eval's request bar mid-line
        raise failure from None
    return flat_metrics(results["results"])


def flat_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """lm-eval's `{task: {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}}` as
    `{"lm_eval/task/acc": 0.5, "lm_eval/task/acc_stderr": 0.1}`; a filter other than `none`
    stays in the name (`exact_match_strict-match`), values that are not numbers are left out."""
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = metric if filter_name == "none" else f"{metric}_{filter_name}"
            flat[f"lm_eval/{task}/{name}"] = float(value)
    return flat
