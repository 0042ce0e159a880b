"""bench.py's figures: tokens/s from a run's step clock, and Lightning's overhead over the raw
loop from adjacent pairs of runs.

The ratio is taken within each pair and then the median over the pairs, not as the ratio of the
two sides' medians: a noisy machine slows both runs of a pair alike, so the drift cancels within
a pair and would not across the whole series.
"""

from __future__ import annotations

import statistics
from typing import Any


def tokens_per_second(times: list[float], warmup: int, tokens_per_step: int) -> float:
    """Tokens/s from the end of step `warmup` to the end of the last (needs steps > warmup)."""
    timed = times[warmup - 1 :]
    return (len(timed) - 1) * tokens_per_step / (timed[-1] - timed[0])


def spread(values: list[float]) -> dict[str, float]:
    """Min, quartiles and max of `values`."""
    quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else []
    q1, q3 = (quartiles[0], quartiles[2]) if quartiles else (values[0], values[0])
    return {"min": min(values), "q1": q1, "q3": q3, "max": max(values)}


def overhead(runs: dict[str, list[float]], tokens_per_step: int) -> dict[str, Any]:
    """The paired ratios (run i of each side was adjacent) and the absolute ms per step."""
    ratios = [lit / raw for lit, raw in zip(runs["lightning"], runs["raw"], strict=True)]
    ms = {side: [1000 * tokens_per_step / tps for tps in runs[side]] for side in runs}
    lightning_ms, raw_ms = (statistics.median(ms[s]) for s in ("lightning", "raw"))
    return {
        "lightning_tokens_per_s": statistics.median(runs["lightning"]),
        "raw_tokens_per_s": statistics.median(runs["raw"]),
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_spread": spread(ratios),
        "paired_ratios": ratios,
        "lightning_ms_per_step": lightning_ms,
        "raw_ms_per_step": raw_ms,
        "overhead_ms_per_step": lightning_ms - raw_ms,
    }
