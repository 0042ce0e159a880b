"""metrics.csv as Lightning's CSV writer writes it: its rows read back, and a header widened.

For `lmtrain.utils.csv_history`, which keeps a resumed run's earlier rows: read back, each value
comes out as the text it went in as, so the rows written again are the same bytes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lmtrain.utils.io import atomic_write


def widen_header(writer: Any) -> None:
    """Give metrics.csv the columns of the writer's pending rows by an atomic replace, and tell
    the writer, so that its `save` appends instead of rewriting the file in place.

    The columns and their order are the ones Lightning's writer would write (sorted)."""
    new = set().union(*writer.metrics) - set(writer.metrics_keys)
    path = Path(writer.metrics_file_path)
    if not new or not path.is_file():
        return
    keys = sorted([*writer.metrics_keys, *new])
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with atomic_write(path) as f:
        out = csv.DictWriter(f, fieldnames=keys)
        out.writeheader()
        out.writerows(rows)
    writer.metrics_keys[:] = keys


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]] | None:
    """(step, values) of each row of a metrics.csv, numbers as numbers; None without a file.

    Written back, an int or float read from text that `str` wrote is the same text, so kept rows
    come out as they went in."""
    if not path.is_file():
        return None
    text = path.read_text()
    if not text.endswith("\n"):  # a kill in the middle of a write: drop the cut row
        text = text[: text.rfind("\n") + 1]
    rows = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        step = row.pop("step", "")
        if not (step.isascii() and step.lstrip("-").isdigit()):
            continue  # not a row Lightning's writer wrote
        values = {k: number(v) for k, v in row.items() if k and v not in ("", None)}
        rows.append((int(step), values))
    return rows


def number(text: str) -> int | float | str:
    """`text` as the int or float that `str` wrote it from (metrics, epochs), else as it is."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def plain_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """A row's values as numbers (tensors as their item), to compare a row logged again with
    the one read back from the file."""
    row = {}
    for key, value in metrics.items():
        value = value.item() if hasattr(value, "item") else value
        row[key] = float(value) if isinstance(value, int | float) else value
    return row
