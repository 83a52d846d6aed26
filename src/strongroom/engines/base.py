"""What every database engine can do. Engines never know about storage or the pipeline."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class TableStats:
    """Statistics of one table, taken in the dump's snapshot (or read after a restore)."""

    name: str  # qualified where the engine has schemas: "public.users"
    rows: int
    checksum: str | None = None  # order-independent content checksum, None if not computed


def checksum_method(checksum: str) -> str:
    """The method of a table checksum: the part before the first ``:`` (``pgrow2.pg15`` of
    ``pgrow2.pg15:123``). Checksums of different methods are never compared."""
    return checksum.split(":", 1)[0]


@dataclass(frozen=True)
class TargetState:
    """What a restore target holds now (for the restore plan)."""

    exists: bool
    empty: bool
    size_bytes: int | None
    tables: list[TableStats] = field(default_factory=list)


@dataclass(frozen=True)
class DumpResult:
    """What a finished dump tells about itself; it goes into the manifest."""

    engine: str  # "postgresql", "sqlite"
    database: str
    server_version: str
    tool_version: str
    dump_format: str  # "pg_dump-custom", "sqlite3-database"
    tables: list[TableStats] = field(default_factory=list)
    # What the dump itself leaves out and a faithful restore needs (PostgreSQL: the
    # database object and the roles its objects refer to); stored in the private section.
    state: dict[str, Any] | None = None


MissingRoles = Literal["refuse", "create", "skip"]


@dataclass(frozen=True)
class RestoreOptions:
    """What the user decided about what the restore target lacks (see ``RestoreChecks``).

    ``missing_roles``: roles the backup names that the server lacks: ``refuse`` (default),
    ``create`` them (NOLOGIN, no password), or ``skip`` their ownership and privileges.
    ``skip_superuser_objects``: leave out objects only a superuser can create.
    ``rewrite_definers`` (MySQL/MariaDB): create views, triggers, routines and events whose
    DEFINER the restoring account cannot set, or that does not exist on the server, with
    the restoring account as definer (``engines.mysql.definers``)."""

    missing_roles: MissingRoles = "refuse"
    skip_superuser_objects: bool = False
    rewrite_definers: bool = False


@dataclass(frozen=True)
class PlanChecks:
    """What an engine found before a restore: lines for the plan and, if the restore must
    not start, the one-line reason (``refusal``)."""

    lines: tuple[str, ...] = ()
    refusal: str | None = None


SwapOutcome = Literal["completed", "undone", "busy", "failed"]


@dataclass(frozen=True)
class SwapRecovery:
    """What :meth:`Engine.recover_swaps` found about one interrupted swap.

    ``database``: the swap's target as ``database_name()`` names it (so a caller can tell
    its own target's from another's). ``outcome``: ``completed`` (the restored copy had
    taken the target's place; the remaining steps ran), ``undone`` (it had not; the
    original is back exactly as it was, open to connections, the staged copy removed),
    ``busy`` (a live swap holds the journal's lock: left alone), ``failed`` (could not be
    settled now, e.g. missing privileges; the journal stays). ``message``: the one line
    shown to the user, redacted, naming the database, the step reached and what was done
    (or, for ``failed``/``busy``, what to do)."""

    database: str
    outcome: SwapOutcome
    message: str


class RunningDump(Protocol):
    """A dump in progress: read ``stream`` to EOF, then call ``finish``."""

    @property
    def stream(self) -> BinaryIO:
        """The raw, uncompressed dump bytes."""

    def finish(self) -> DumpResult:
        """Wait for the dump to end; raise ``DumpFailed`` if it did not succeed."""


@runtime_checkable
class LaidOutDump(Protocol):
    """A running dump that knows where its stream's parts begin (optional for engines)."""

    def forced_cuts(self) -> tuple[int, ...]:
        """Byte offsets from the stream's start, increasing, where a chunk must end
        (``pipeline/chunking.py``); ``()`` if none. Call once, before reading ``stream``:
        it may read the stream's start, which ``stream`` then yields again."""


class Engine(Protocol):
    """A database reachable through one URL."""

    kind: str

    def describe(self) -> str:
        """The URL with any password redacted."""

    def database_name(self) -> str:
        """The database's name (the default backup target name)."""

    def check(self) -> None:
        """Raise ``ToolMissing``, ``DatabaseUnreachable`` or ``DatabaseAuthFailed`` early."""

    def estimated_size(self) -> int | None:
        """Rough size of a dump in bytes, for progress display; ``None`` if unknown."""

    def dump(self) -> AbstractContextManager[RunningDump]:
        """Start a consistent dump; leaving the context stops the dump tool if still running."""

    def check_restore_target(self) -> None:
        """Raise ``TargetNotEmpty`` unless the target is missing or empty."""

    def restore(
        self,
        source: Iterable[bytes],
        *,
        size_hint: int | None = None,
        tables_hint: int | None = None,
        state: Mapping[str, Any] | None = None,
        options: RestoreOptions | None = None,
    ) -> None:
        """Restore the dump read from ``source`` into the target (a new or empty database).

        ``state`` is the backup's recorded ``DumpResult.state`` (``None`` for old backups);
        ``options`` what the user chose about missing roles and superuser-only objects.
        ``source`` raises if the stored data is damaged; the engine then leaves no
        half-restored target behind (it drops what it created) and re-raises.
        """

    def plan_checks(self, state: Mapping[str, Any] | None, options: RestoreOptions) -> PlanChecks:
        """What restoring a backup with ``state`` into this target needs that the server
        lacks (roles, privileges, extensions); changes nothing."""

    def table_stats(self) -> list[TableStats]:
        """Row counts and content checksums of the tables now (used to verify a restore)."""

    def restore_tables(
        self,
        source: Iterable[bytes],
        tables: Sequence[str],
        *,
        into: str | None,
        expected: Sequence[TableStats],
        source_database: str,
    ) -> list[str]:
        """Restore only ``tables`` of the dump read from ``source`` into this database, next
        to the live data (``into``: a side schema or database to put them in), never
        overwriting an existing table; return the names restored. ``expected``: the
        backup's statistics. Raises ``UsageError`` where the engine cannot (SQLite)."""

    def inspect(self) -> TargetState:
        """Whether the target exists, is empty, its size and its tables (row counts)."""

    def sibling(self, name: str) -> Engine:
        """Another database ``name`` on the same server with the same credentials (SQLite:
        the file ``name.db`` in the same folder); it need not exist."""

    def staging(self) -> Engine:
        """A new, not yet existing target beside this one (same server or folder), into
        which a restore is staged and verified before it is swapped in."""

    def swap_in(
        self, staged: Engine, *, keep_old: bool, source_database: str | None = None
    ) -> str | None:
        """Put ``staged`` in this target's place. The old target, if any, is kept under a
        dated name (returned) or dropped when ``keep_old`` is false. ``source_database``:
        the name of the database the backup was taken of (MySQL re-points definitions that
        name it at the target; the others ignore it)."""

    def drop_hint(self, kept: str) -> str:
        """How a user removes ``kept`` (the name ``swap_in`` returned) by hand, spelled so
        that it works when pasted: ``DROP DATABASE "Shop_old_20261130_054954";`` (quoted
        only where the name needs it), or ``rm -- '/srv/app.db.old-…'`` for a file."""

    def recover_swaps(self) -> list[SwapRecovery]:
        """Settle every interrupted swap this engine can see, one ``SwapRecovery`` each;
        ``[]`` when there is none (the common case: it must then be cheap, one query or
        one ``stat``). Called before any command uses the database (``services.swaps``)
        and by ``strongroom recover``. The contract (docs/design.md, "Swap journal"):

        - Scope: what a later command touching the same place must see: PostgreSQL and
          MySQL every swap journal on the server, SQLite the journal of this file.
        - A swap journal exists only while a swap runs or after it was interrupted:
          ``swap_in`` writes it (``engines.swap_journal``: one ``JournalEntry`` naming
          the step about to run) before each step, durably, and clears it after the
          last; a swap in progress holds a lock that dies with its process (PostgreSQL:
          a session advisory lock; a file engine: e.g. ``flock``). A journal whose lock
          is held is waited for (bounded) and then reported ``busy``, never touched.
        - Direction, decided from what is there, not from the journal's step: if the
          staged copy has taken the target's name (the ``RENAME_IN`` step took effect)
          the swap is completed (old copy reopened or dropped as ``keep_old`` said,
          clean-up, journal cleared); otherwise it is undone (original back exactly as
          it was, open to connections if it was, the staged copy removed, journal
          cleared). Never closes anything.
        - Trust: act only on what the journal's writer could have changed itself
          (PostgreSQL: only databases carrying the same journal, ``swap_id``), since
          the recovering user may have more rights than the one who wrote it.
        - Idempotent: a recovery killed half-way is settled again by the next one;
          two at once serialise on the lock and the second finds nothing.
        - Never raises for a swap it cannot settle (``failed``, the journal stays);
          raises ``DatabaseUnreachable``/``DatabaseAuthFailed`` when it cannot look.
        - ``message``: ``undid|completed the interrupted swap into <where> (stopped at
          step <step>): <what is there now>`` (``SwapRecovery``).
        """

    def drop(self) -> None:
        """Remove this target (database or file); missing is fine."""

    def count_result_rows(self, query: str) -> int:
        """Run a read-only check query; return how many rows it returned (at most 1000)."""
