"""A rich progress bar for loops over snapshots or frames (training has its own, with loss fields)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def counting_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable; a bar with count and time remaining, or nothing when disabled."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
