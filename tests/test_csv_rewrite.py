"""A new column in metrics.csv must not put the rows before it at risk (utils/csv_history.py).

Lightning's CSV writer rewrites the whole file in place (truncate, then write) when a row brings
a new column: the first validation's `val/loss`, a learning rate. A kill or a full disk in that
moment left a file cut short, and a resumed run then lost the rows the kill tests compare. A
real write failure stands in for the kill, at a known moment: the child process's file-size
limit (RLIMIT_FSIZE) is set just above the file's size, so that widening the header by one
column cannot be written whole.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROWS = 200  # each gains a comma when the column is added: the rewrite outgrows the limit

CHILD = """
import resource, sys
from pathlib import Path
from lmtrain.utils.csv_history import ResumableCSVLogger

logger = ResumableCSVLogger(sys.argv[1], name="csv", version="", flush_logs_every_n_steps=1)
for step in range({rows}):
    logger.log_metrics({{"train/loss": 1 / (step + 1)}}, step)
size = (Path(sys.argv[1]) / "csv" / "metrics.csv").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64, resource.RLIM_INFINITY))
try:
    logger.log_metrics({{"val/loss": 0.5}}, {rows})
except OSError as error:  # EFBIG: Python ignores SIGXFSZ, so the write fails instead
    sys.exit(f"write failed: {{error}}")
"""


def test_a_failed_write_of_a_new_column_keeps_every_earlier_row(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(rows=ROWS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode != 0 and "write failed" in child.stderr, child.stderr[-2000:]
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["train/loss"]) for r in rows] == [
        (str(step), str(1 / (step + 1))) for step in range(ROWS)
    ]
