"""How the entry points' log lines show a metric: readable, and never 0 for a small rate."""

from __future__ import annotations


def short(value: float) -> float:
    """`value` to 4 decimals from 1 up (a count, 105408.0, stays whole; a loss, 3.3768), and
    to 4 significant figures below 1: `round(v, 4)` showed a learning rate of 5e-05 as 0.0."""
    return round(value, 4) if abs(value) >= 1 else float(f"{value:.4g}")
