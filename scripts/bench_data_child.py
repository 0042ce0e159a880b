"""What bench_data.py measures in a fresh process (`--child MODE SETTINGS`): the datamodule's
whole preparation, or transformers' run_clm.py data pipeline, each timed from its first call.

A fresh process per run starts each one with nothing cached or allocated, and lets the parent
sample the memory of its whole tree (workers included) from outside.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench_memory import proc_kb


def child_prepare(settings: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: the datamodule's whole preparation, timed from the call."""
    import resource

    from lmtrain.data import TextDataModule
    from lmtrain.data.sources import TextFilesSource
    from lmtrain.data.token_cache import load_meta

    tokenizer = {"kind": "pretrained", "name": settings["tokenizer"]}
    source = TextFilesSource(settings["corpus"], val_fraction=0.05)
    dm = TextDataModule(
        source,
        tokenizer,
        block_size=1024,
        batch_size=8,
        cache_dir=settings["cache_dir"],
        prepare_workers=settings["workers"],
        prepare_chunk_mb=settings["chunk_mb"],
    )
    rss_before = proc_kb("/proc/self/status", "VmRSS:") / 1024
    start = time.perf_counter()
    dm.prepare_data()
    seconds = time.perf_counter() - start
    meta = load_meta(dm.cache_path)
    return {
        "seconds": seconds,
        "text_bytes": sum(meta["text_bytes"].values()),
        "tokens": sum(meta["tokens"].values()),
        "workers": meta["prepare"]["workers"],
        "rss_before_prepare_mb": rss_before,
        "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ru_maxrss_largest_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        / 1024,
    }


def child_hf_map(settings: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: transformers' run_clm.py data pipeline, timed from load_dataset."""
    from itertools import chain

    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(settings["tokenizer"])
    files = sorted(str(p) for p in Path(settings["corpus"]).rglob("*.txt"))
    block_size, workers = 1024, settings["workers"]
    start = time.perf_counter()
    raw = datasets.load_dataset(
        "text", data_files=files, sample_by="document", cache_dir=settings["cache_dir"]
    )

    def tokenize_function(examples: dict[str, list[str]]) -> Any:
        return tokenizer(examples["text"])

    def group_texts(examples: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated[next(iter(examples))]) // block_size * block_size
        result = {
            k: [t[i : i + block_size] for i in range(0, total_length, block_size)]
            for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    tokenized = raw.map(tokenize_function, batched=True, num_proc=workers, remove_columns=["text"])
    grouped = tokenized.map(group_texts, batched=True, num_proc=workers)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "blocks": grouped["train"].num_rows, "workers": workers}
