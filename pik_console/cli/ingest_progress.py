"""What ``pik ingest`` shows while it runs: a progress bar on a terminal, nothing otherwise.

On a terminal (stderr is a TTY) the bar shows the lines ingested, the bytes of the input read, and the rate;
when the input's size is known (a regular file, or stdin redirected from one) also the percentage of it and
the time left. Anywhere else (stderr piped to a file or a CI log) nothing is drawn: no carriage returns, only
the summary the command prints at the end. The bar is erased when it stops, so the summary, or the one
message of an interrupted run, is what stays on the screen.

rich is imported only when a bar is drawn: a piped run pays nothing for it at startup.
"""

from __future__ import annotations

import os
import stat
import time
from types import TracebackType
from typing import IO, Any


class IngestDisplay:
    """The display of one ingest: ``update`` after each batch; a context manager that erases it on exit."""

    def update(self, lines: int, bytes_read: int) -> None:
        """``lines`` lines (ingested or found already stored) and ``bytes_read`` bytes of the input so far."""

    def __enter__(self) -> IngestDisplay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def input_size(stream: IO[bytes]) -> int | None:
    """The bytes left to read in ``stream`` when it is a regular file (None for a pipe or a terminal)."""
    try:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(info.st_size - stream.tell(), 0)
    except (OSError, ValueError):
        return None


def ingest_display(err: IO[str], show: bool, total_bytes: int | None) -> IngestDisplay:
    """A bar on ``err`` when ``show`` (the caller decides: a terminal, and no ``--json``), else no display."""
    if not show:
        return IngestDisplay()
    return _Bar(err, total_bytes)


class _Bar(IngestDisplay):
    def __init__(self, err: IO[str], total_bytes: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[str | ProgressColumn] = [TextColumn("ingest")]
        if total_bytes is not None:
            columns += [
                BarColumn(bar_width=12),
                TaskProgressColumn(),
                TextColumn("{task.fields[lines]:>9,} lines"),
                DownloadColumn(binary_units=True),
                TextColumn("{task.fields[rate]:>7,}/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            ]
        else:  # stdin from a pipe: no total, so no percentage and no time left
            columns += [
                TextColumn("{task.fields[lines]:>9,} lines"),
                TextColumn("{task.fields[mib]:,.1f} MiB"),
                TextColumn("{task.fields[rate]:>7,} lines/s"),
                TimeElapsedColumn(),
            ]
        # Untrusted data never reaches the bar: it shows numbers only. Markup is off all the same.
        console = Console(file=err, highlight=False, markup=False, emoji=False)
        self._progress = Progress(
            *columns,
            console=console,
            transient=True,
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task("ingest", total=total_bytes, lines=0, rate=0, mib=0.0)
        self._started = time.perf_counter()

    def update(self, lines: int, bytes_read: int) -> None:
        elapsed = time.perf_counter() - self._started
        rate = round(lines / elapsed) if elapsed > 0 else 0
        self._progress.update(
            self._task, completed=bytes_read, lines=lines, rate=rate, mib=bytes_read / 2**20
        )

    def __enter__(self) -> IngestDisplay:
        self._progress.start()
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self._progress.stop()
