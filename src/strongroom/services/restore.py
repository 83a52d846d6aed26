"""The restore use case: read back, check every chunk, restore, compare row counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from strongroom.engines.base import Engine
from strongroom.errors import UsageError
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.progress import NoProgress, ProgressSink

log = logging.getLogger("strongroom.restore")


@dataclass(frozen=True)
class TableComparison:
    name: str
    expected: int | None  # recorded in the manifest at dump time
    actual: int | None  # counted in the restored database

    @property
    def matches(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class RestoreReport:
    manifest: Manifest
    target: str
    comparisons: list[TableComparison]
    duration_seconds: float

    @property
    def ok(self) -> bool:
        return all(c.matches for c in self.comparisons)


def compare_tables(expected: dict[str, int], actual: dict[str, int]) -> list[TableComparison]:
    """Line up recorded and restored row counts, table by table (missing sides are None)."""
    names = sorted(set(expected) | set(actual))
    return [TableComparison(n, expected.get(n), actual.get(n)) for n in names]


def with_progress(stream: Iterable[bytes], progress: ProgressSink) -> Iterator[bytes]:
    done = 0
    for data in stream:
        done += len(data)
        progress.advance(done)
        yield data


def run_restore(
    repo: Repository,
    manifest: Manifest,
    engine: Engine,
    *,
    progress: ProgressSink | None = None,
) -> RestoreReport:
    """Restore ``manifest`` into the engine's (new or empty) target and verify row counts."""
    progress = progress or NoProgress()
    if manifest.engine != engine.kind:
        raise UsageError(
            f"backup {manifest.backup_id} is a {manifest.engine} backup; it cannot be restored "
            f"into a {engine.kind} database"
        )
    engine.check_restore_target()
    private = repo.private_section(manifest)
    _ = repo.chunks  # load the key before touching the target
    clock = time.monotonic()
    progress.start("restore", manifest.raw_size)
    try:
        engine.restore(with_progress(repo.read_stream(manifest), progress))
    finally:
        progress.finish()
    duration = time.monotonic() - clock
    expected = {t.name: t.rows for t in private.tables}
    actual = {t.name: t.rows for t in engine.table_stats()}
    report = RestoreReport(manifest, engine.describe(), compare_tables(expected, actual), duration)
    log.info(
        "restore of %s into %s: %s",
        manifest.backup_id,
        engine.describe(),
        "verified" if report.ok else "MISMATCH",
    )
    return report
