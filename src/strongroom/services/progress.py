"""How services report progress without knowing who is watching."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, label: str, total: int | None) -> None: ...

    def advance(self, done_bytes: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """Reports nothing."""

    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, done_bytes: int) -> None:
        pass

    def finish(self) -> None:
        pass
