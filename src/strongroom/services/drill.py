"""Restore drills (``verify --restore``): restore into a throwaway database, verify it,
run the user's check queries, record the outcome and the measured restore time (RTO)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from strongroom.engines import engine_kind, open_engine, serverless_scratch
from strongroom.engines.base import Engine, RestoreOptions
from strongroom.errors import StrongroomError, UsageError
from strongroom.repository.ids import utc_now_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import (
    KIND_RESTORE,
    VerificationRecord,
    record_verification,
)
from strongroom.services.progress import NoProgress, ProgressSink
from strongroom.services.restore import (
    TableComparison,
    compare_tables,
    refuse_base_backup,
    with_progress,
)
from strongroom.services.swaps import settle_interrupted_swaps
from strongroom.wording import counted

log = logging.getLogger("strongroom.drill")

SHOWN_TABLES = 10  # tables a message names before "and N more"

# A drill proves the data restores and verifies; it needs no roles the scratch server lacks
# and creates none: ownership and privileges of missing roles, and superuser-only objects
# (event triggers, untrusted extensions), are left out of the scratch copy, and MySQL
# objects whose definer the scratch account cannot set get that account as definer.
DRILL_OPTIONS = RestoreOptions(
    missing_roles="skip", skip_superuser_objects=True, rewrite_definers=True
)


def named_tables(names: Sequence[str], limit: int = SHOWN_TABLES) -> str:
    """The tables a message names: ``users, orders``; past ``limit`` names, the first
    ``limit`` and ``and N more`` (``t0, t1, …, t9 and 3 more``); empty for none."""
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def tables_differ(names: Sequence[str]) -> str:
    """The verification message for tables that differ (one text for the web and the
    command line): ``3 tables differ from the backup: users, orders, items``; the record
    keeps only the part before the colon (it is clear JSON and names no table)."""
    return f"{_differ(len(names))}: {named_tables(names)}"


def _differ(n: int) -> str:
    return f"{counted(n, 'table')} {'differs' if n == 1 else 'differ'} from the backup"


@dataclass(frozen=True)
class CheckResult:
    query: str
    rows: int  # rows returned: a passing check returns none

    @property
    def ok(self) -> bool:
        return self.rows == 0


@dataclass(frozen=True)
class DrillResult:
    manifest: Manifest
    comparisons: list[TableComparison]
    checks: list[CheckResult]
    restore_seconds: float
    record: VerificationRecord
    detail: str | None = None  # full problem text for the user (the record keeps no names)

    @property
    def ok(self) -> bool:
        return self.record.ok


def read_check_queries(path: Path) -> list[str]:
    """Queries from a SQL file: statements separated by ``;`` (``--`` comments ignored)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read check file {path}: {exc.strerror}") from exc
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    queries = [q.strip() for q in "\n".join(lines).split(";")]
    queries = [q for q in queries if q]
    if not queries:
        raise UsageError(f"check file {path} holds no query")
    return queries


def scratch_for(
    manifest: Manifest,
    *,
    scratch_url: str | None,
    server_url: str | None,
    prefix: str = "strongroom_verify",
) -> Engine:
    """Where a restore drill of ``manifest`` restores (the one rule the CLI, the web and the
    scheduler share): ``scratch_url`` when given; else, for an engine that needs no server
    (SQLite), a temp file ``<prefix>_<8 hex>.db``; else a new database ``<prefix>_<8 hex>``
    beside ``server_url``'s on the same server, when that URL is of the backup's engine (a
    URL of anything else, say Redis, is ignored). Raises ``UsageError`` when none fits, or
    when ``manifest`` is a base backup (no drill restores those into a database)."""
    refuse_base_backup(manifest)
    if scratch_url and scratch_url.strip():
        return open_engine(scratch_url.strip())
    name = f"{prefix}_{secrets.token_hex(4)}"
    throwaway = serverless_scratch(manifest.engine, name)
    if throwaway is not None:
        return throwaway
    if server_url and _engine_of(server_url) == manifest.engine:
        return open_engine(server_url).sibling(name)
    raise UsageError(
        f"give a scratch database URL for a {manifest.engine} restore drill: a database that "
        f"does not exist yet on a {manifest.engine} server where it may be created"
    )


def _engine_of(url: str) -> str | None:
    try:
        return engine_kind(url).value
    except StrongroomError:
        return None


def verify_by_restore(
    repo: Repository,
    manifest: Manifest,
    scratch: Engine,
    *,
    checks: list[str] | None = None,
    progress: ProgressSink | None = None,
) -> DrillResult:
    """Restore into ``scratch`` (must not exist or be empty), verify, check, drop it, and
    record the outcome (kind ``restore``; the CLI, the web and the scheduler all come
    here). A passed drill is what makes a backup "verified good". Raises ``UsageError``
    (another engine) or ``TargetNotEmpty`` before restoring anything, and records nothing
    then; a failed restore, table or check is recorded and reported in the result."""
    progress = progress or NoProgress()
    refuse_base_backup(manifest)
    if manifest.engine != scratch.kind:
        raise UsageError(
            f"backup {manifest.backup_id} is a {manifest.engine} backup; the scratch database "
            f"must be {manifest.engine} too"
        )
    settle_interrupted_swaps(scratch)  # what a killed swap left on that server
    scratch.check_restore_target()
    private = repo.private_section(manifest)
    clock = time.monotonic()
    progress.start(f"verify --restore {manifest.backup_id}", manifest.raw_size)
    problem: str | None = None
    detail: str | None = None
    comparisons: list[TableComparison] = []
    results: list[CheckResult] = []
    try:
        try:
            scratch.restore(
                with_progress(repo.read_stream(manifest), progress),
                size_hint=manifest.raw_size,
                tables_hint=sum(1 for t in private.tables if t.rows > 0),
                state=private.engine_state,
                options=DRILL_OPTIONS,
            )
        finally:
            progress.finish()
        restore_seconds = time.monotonic() - clock
        comparisons = compare_tables(private.tables, scratch.table_stats())
        results = [CheckResult(q, scratch.count_result_rows(q)) for q in checks or []]
    except StrongroomError as exc:
        restore_seconds = time.monotonic() - clock
        problem = f"restore failed ({type(exc).__name__})"
        detail = exc.message
    finally:
        try:
            scratch.drop()
        except StrongroomError as exc:
            log.error("could not drop the scratch database %s: %s", scratch.describe(), exc)
    bad_tables = [c.name for c in comparisons if not c.matches]
    bad_checks = [c for c in results if not c.ok]
    if problem is None and bad_tables:
        # the record is clear JSON: its problem names no table; the detail (shown) does
        problem = _differ(len(bad_tables))
        detail = tables_differ(bad_tables)
    if problem is None and bad_checks:
        problem = f"{counted(len(bad_checks), 'check query', 'check queries')} returned rows"
        detail = problem
    record = VerificationRecord(
        backup_id=manifest.backup_id,
        verified_at=utc_now_iso(),
        kind=KIND_RESTORE,
        ok=problem is None,
        restore_seconds=round(restore_seconds, 3),
        tables_checked=len(comparisons),
        checks_run=len(results),
        problem=problem,
    )
    record_verification(repo.storage, record)
    return DrillResult(manifest, comparisons, results, restore_seconds, record, detail)
