"""The progress line of tokenizing a corpus: what `lmtrain.data.encode` shows on a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def tokenizing_progress(total_bytes: int | None) -> Progress:
    """MB done, MB/s, tokens/s and an ETA (when the size is known), on a terminal only."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[mb_s]} MB/s  {task.fields[tokens_s]} tokens/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )
