"""Request and response bodies of the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from strongroom.repository.names import (
    MAX_TAGS,
    TAG_MAX_LENGTH,
    TARGET_MAX_LENGTH,
    normalized,
    printable,
    tag_problem,
    target_name_problem,
)
from strongroom.web.jobs import job_result
from strongroom.web.models import IndexedBackup, JobRun


class Problem(BaseModel):
    detail: str


def _target_name(value: str | None) -> str | None:
    """A target name by the CLI's rules (``repository/names.py``): a 422 naming the rule.
    (Only where a backup is written: names older versions wrote are still looked up.)"""
    if value is not None:
        problem = target_name_problem(normalized(value))
        if problem is not None:
            raise ValueError(f"target name {printable(value)[:80]!r} is not allowed: {problem}")
    return value


class Verification(BaseModel):
    verified_at: str
    kind: str
    ok: bool
    problem: str | None = None


class BackupSummary(BaseModel):
    backup_id: str
    target: str
    engine: str
    engine_version: str
    status: str
    started_at: str
    finished_at: str
    duration_seconds: float
    raw_size: int
    stored_new_bytes: int
    chunk_count: int
    tags: list[str]
    created_by: str
    pinned: bool
    last_verification: Verification | None

    @classmethod
    def of(cls, row: IndexedBackup) -> BackupSummary:
        verification = None
        if row.verified_at is not None:
            verification = Verification(
                verified_at=row.verified_at,
                kind=row.verified_kind or "",
                ok=bool(row.verified_ok),
                problem=row.verified_problem or None,
            )
        return cls(
            backup_id=row.backup_id,
            target=row.target,
            engine=row.engine,
            engine_version=row.engine_version,
            status=row.status,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=row.duration_seconds,
            raw_size=row.raw_size,
            stored_new_bytes=row.stored_new_bytes,
            chunk_count=row.chunk_count,
            tags=[t for t in row.tags.split(",") if t],
            created_by=row.created_by,
            pinned=row.pinned,
            last_verification=verification,
        )


class TableRow(BaseModel):
    name: str
    rows: int
    checksum: bool = Field(description="whether a content checksum was recorded")


class BackupDetail(BackupSummary):
    dump_format: str
    tool_version: str
    new_chunk_count: int
    stream_checksum: str
    database: str
    tables: list[TableRow]
    verifications: list[Verification]


class TargetWal(BaseModel):
    """The WAL archive of a target's base backups (point-in-time recovery)."""

    streams: list[str] = Field(description="log streams (postgresql-<system identifier>)")
    window_start: str | None = Field(
        description="the oldest moment recoverable: the oldest base backup with all its WAL"
    )
    window_end: str | None = Field(description="the newest archived segment's time")
    last_segment: str | None = Field(description="the newest archived segment's name")
    last_segment_at: str | None
    lag_seconds: float | None = Field(description="seconds since the newest segment arrived")
    gap: bool = Field(description="WAL a retained base backup needs is missing")
    first_missing: str | None = Field(description="the first missing segment, when gap")
    unsure: list[str] = Field(description="why continuity cannot be judged (history files)")


class TargetSummary(BaseModel):
    name: str
    configured: bool
    engine: str | None
    backups: int
    stored_bytes: int
    newest_backup_id: str | None
    newest_backup_at: str | None
    health: str
    reasons: list[str]
    next_run: str | None
    wal: TargetWal | None = Field(None, description="targets with base backups only")


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(
        min_length=1, max_length=TARGET_MAX_LENGTH, description="a configured target"
    )
    tags: list[Annotated[str, Field(max_length=TAG_MAX_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description=f"1-{TAG_MAX_LENGTH} printable characters each, no ','; at most {MAX_TAGS}",
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        """The rules a CLI backup applies (``repository/names.py``), checked before a job
        is queued: a bad tag is a 422, not a job that fails later."""
        for tag in value:
            problem = tag_problem(normalized(tag))
            if problem is not None:
                raise ValueError(f"tag {printable(tag)[:80]!r} is not allowed: {problem}")
        return value

    _target = field_validator("target")(_target_name)


class JobAccepted(BaseModel):
    job_id: str
    status_url: str


class JobsAccepted(BaseModel):
    jobs: list[JobAccepted]


class Job(BaseModel):
    job_id: str
    kind: str
    status: str = Field(description="queued, running, succeeded or failed")
    phase: str
    bytes_done: int
    bytes_total: int | None
    percent: float | None
    target: str | None
    backup_id: str | None
    requested_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    result: dict[str, Any]

    @classmethod
    def of(cls, row: JobRun) -> Job:
        # as the job box shows it (_job.html): 100 only once the job has succeeded; a
        # running backup's total is the database's estimated size, which its dump may pass
        percent = None
        if row.status == "succeeded":
            percent = 100.0
        elif row.bytes_total:
            percent = float(min(99, 100 * row.bytes_done // row.bytes_total))
        return cls(
            job_id=row.id,
            kind=row.kind,
            status=row.status,
            phase=row.phase,
            bytes_done=row.bytes_done,
            bytes_total=row.bytes_total,
            percent=percent,
            target=row.target,
            backup_id=row.backup_id,
            requested_by=row.requested_by,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            error=row.error,
            result=job_result(row),
        )


class RestorePlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(
        default=None,
        max_length=2000,
        description="database URL to restore into; default: the backup target's database",
    )
    target: str | None = Field(
        default=None,
        max_length=200,
        description="with backup id latest: whose newest regular backup (default: the target "
        "the destination belongs to); also settles which target the destination is",
    )
    safety_backup: bool = True
    missing_roles: Literal["refuse", "create", "skip"] = Field(
        default="refuse",
        description="roles the backup refers to that the server lacks: refuse (the plan "
        "says which), create them (NOLOGIN, no password), or skip their ownership and grants",
    )
    skip_superuser_objects: bool = Field(
        default=False, description="leave out event triggers and untrusted extensions"
    )
    rewrite_definers: bool = Field(
        default=False,
        description="MySQL/MariaDB: objects whose DEFINER the restoring account cannot set "
        "(or that does not exist on the server) get the restoring account as definer",
    )


class RestoreRequest(RestorePlanRequest):
    confirm: str = Field(max_length=200, description="the destination database's name")
    drop_old: bool = False


class PlanTable(BaseModel):
    name: str
    rows_now: int | None
    rows_in_backup: int | None


class RestorePlanResponse(BaseModel):
    backup_id: str
    backup_target: str
    safety_backup_chosen: bool = Field(
        default=False, description="the backup chosen is a pre-restore safety backup"
    )
    destination_target: str = Field(
        default="", description="the target the destination belongs to (its safety backup's)"
    )
    target_basis: str = Field(default="", description="why it is that target")
    warning: str | None = Field(
        default=None, description="set when the backup is of another target than the destination"
    )
    engine: str
    raw_size: int
    taken_at: str
    destination: str = Field(description="the destination, password removed")
    database_name: str = Field(description="type this as the confirmation")
    exists: bool
    empty: bool
    size_bytes: int | None
    will_replace: bool
    safety_backup: bool
    estimated_seconds: float
    estimate_basis: str
    checks: list[str] = Field(default_factory=list, description="what the server lacks")
    refusal: str | None = Field(default=None, description="why the restore would refuse")
    tables: list[PlanTable]


class VerifyRestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scratch: str | None = Field(
        default=None, max_length=2000, description="throwaway database URL (default: automatic)"
    )


class PinState(BaseModel):
    backup_id: str
    pinned: bool
    changed: bool


class Forgotten(BaseModel):
    backup_id: str
    forgotten: bool


class RetentionBackup(BaseModel):
    backup_id: str
    finished_at: str
    tags: list[str]
    raw_size: int
    keep: bool
    reasons: list[str]


class RetentionTarget(BaseModel):
    target: str
    policy: str
    safety: str = Field(default="", description="the rule for pre-restore safety backups")
    backups: list[RetentionBackup]


class RetentionRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(default=None, max_length=200)
    prune: bool = True


class TargetHealthModel(BaseModel):
    target: str
    status: str
    reasons: list[str]
    newest_backup_id: str | None
    newest_backup_at: str | None
    newest_age_seconds: float | None
    expected_interval_seconds: float
    last_run_ok: bool | None
    last_verified_restore_at: str | None
    last_verified_restore_seconds: float | None
    wal_window_start: str | None = Field(
        None, description="targets with base backups: the oldest moment recoverable (ISO 8601)"
    )
    wal_window_end: str | None = Field(
        None, description="the newest archived WAL segment's time: the window's end"
    )
    wal_last_segment_at: str | None = None
    wal_lag_seconds: float | None = Field(
        None, description="seconds since the newest WAL segment was archived"
    )
    wal_gap: bool | None = Field(
        None, description="WAL a retained base backup needs is missing (null: no base backup)"
    )


class HealthReport(BaseModel):
    status: str = Field(description="healthy, warning or critical")
    checked_at: str
    targets: list[TargetHealthModel]


class HistoryBackup(BaseModel):
    """One kept backup as the dashboard's charts draw it."""

    backup_id: str
    finished_at: str = Field(description="ISO 8601 UTC")
    at: int = Field(description="finished_at as Unix seconds (the charts' x value)")
    stored_new_bytes: int = Field(
        description="bytes this backup added to the repository (new chunks, after "
        "deduplication, compression and encryption)"
    )
    stored_cumulative_bytes: int = Field(
        description="running total of stored_new_bytes over the target's kept backups, "
        "oldest first, up to and including this one"
    )
    raw_size: int = Field(description="bytes of the dump before deduplication")
    duration_seconds: float


class HistoryRun(BaseModel):
    """One backup run (scheduled, manual, web or API), failed ones included."""

    finished_at: str = Field(description="ISO 8601 UTC")
    at: int = Field(description="finished_at as Unix seconds")
    ok: bool
    backup_id: str | None = Field(description="the backup it made; null when it failed")
    error_kind: str | None = Field(description="the kind of error that ended a failed run")


class RestoreCheck(BaseModel):
    """A backup's newest verification as the manifest index keeps it."""

    backup_id: str
    verified_at: str = Field(description="ISO 8601 UTC")
    kind: str = Field(description="restore (a restore drill) or read (chunks re-read)")
    ok: bool


class TargetHistory(BaseModel):
    """What the dashboard's charts of one target draw; lists are oldest first."""

    target: str
    timezone: str = Field(description="the configured time zone the UI shows times in")
    backups: list[HistoryBackup] = Field(description="the newest `limit` kept backups")
    total_backups: int = Field(description="kept backups of the target, all of them")
    stored_bytes: int = Field(description="sum of stored_new_bytes of all kept backups")
    runs: list[HistoryRun] = Field(description="the newest `limit` backup runs")
    failed_runs: int = Field(description="failed runs among `runs`")
    last_restore_drill: RestoreCheck | None = Field(
        description="the newest restore drill among the backups' newest verifications"
    )
    last_verification: RestoreCheck | None = Field(
        description="the newest verification of any kind of the target's backups"
    )
