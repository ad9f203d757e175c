"""Rich progress bars for long work, as the (set_total, advance) callbacks the tasks accept."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as p:
        task = p.add_task(description, total=total)

        def set_total(n: int) -> None:
            p.update(task, total=n)

        def advance(n: int) -> None:
            p.advance(task, n)

        yield set_total, advance
