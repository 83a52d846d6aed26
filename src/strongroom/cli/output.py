"""User-facing output: sizes, durations, tables, progress (terminal bar or plain lines)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console

from strongroom.services.progress import ProgressSink

if TYPE_CHECKING:  # rich.progress is imported when a bar starts (every command imports this)
    from rich.progress import Progress, TaskID

# Off a terminal, keep lines whole (ids must never be cut) instead of Rich's 80 columns.
_WIDE = None if sys.stdout.isatty() else 240
# No markup: what strongroom prints comes from databases and repositories (a table named
# "[/]", a tag "[bold]"), and Rich would read it as markup (or fail on it). Styles are
# given explicitly (``style=``) where wanted.
stdout = Console(highlight=False, soft_wrap=True, width=_WIDE, markup=False)
stderr = Console(
    stderr=True,
    highlight=False,
    soft_wrap=True,
    width=None if sys.stderr.isatty() else 240,
    markup=False,
)

PLAIN_PROGRESS_INTERVAL = 5.0


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs} s"


class TerminalProgress:
    """A Rich progress bar on stderr."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, label: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, done_bytes: int) -> None:
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[0]
            if task.total is not None and done_bytes > task.total:
                self._progress.update(self._task, total=done_bytes)
            self._progress.update(self._task, completed=done_bytes)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class PlainProgress:
    """Occasional plain lines on stderr, for logs and CI."""

    def __init__(self, interval: float = PLAIN_PROGRESS_INTERVAL) -> None:
        self._interval = interval
        self._label = ""
        self._total: int | None = None
        self._last = 0.0
        self._done = 0

    def start(self, label: str, total: int | None) -> None:
        self._label, self._total, self._last, self._done = label, total, time.monotonic(), 0

    def advance(self, done_bytes: int) -> None:
        self._done = done_bytes
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._line()

    def _line(self) -> None:
        if self._total:
            share = min(100.0, 100.0 * self._done / self._total)
            of = f" of ~{human_bytes(self._total)} ({share:.0f}%)"
        else:
            of = ""
        print(f"{self._label}: {human_bytes(self._done)}{of}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        pass


def progress_sink() -> ProgressSink:
    return TerminalProgress() if sys.stderr.isatty() else PlainProgress()
