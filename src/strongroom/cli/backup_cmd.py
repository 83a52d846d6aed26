"""strongroom backup"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.cli.options import (
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    environment_only,
    location_from,
)
from strongroom.cli.output import human_bytes, human_seconds, progress_sink, stdout
from strongroom.errors import UsageError
from strongroom.services.settings_sources import Sources
from strongroom.wording import counted

if TYPE_CHECKING:
    from strongroom.config import NotificationSettings
    from strongroom.notify.dispatch import Notifier
    from strongroom.repository.manifest import Manifest
    from strongroom.repository.repository import Repository
    from strongroom.services.backup import BackupReport, BackupRun

# The engines (psycopg, PyMySQL), the backup service, notifications and metrics are
# imported when the command runs: ``backup --help`` and every other command do not pay
# for them (cli/app.py loads one command's module; see tests/cli/test_lazy_commands.py).

BackupConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar="STRONGROOM_CONFIG",
        help="strongroom.toml (default: ./strongroom.toml when it exists): the target's hooks "
        "run around the backup; without a URL, the configured target's database (--target, "
        "or the only one), and without --repo, the configured repository.",
        show_envvar=True,
    ),
]


def backup(
    database_url: Annotated[
        str | None,
        typer.Argument(help="Database URL (default: $DATABASE_URL).", show_default=False),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag the backup (repeatable), e.g. daily.")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Target name (default: the database name).")
    ] = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option("--metrics-file", help="Also write Prometheus metrics to this textfile."),
    ] = None,
    config: BackupConfigOption = None,
    physical: Annotated[
        bool,
        typer.Option(
            "--physical",
            help="PostgreSQL: a base backup of the whole cluster (pg_basebackup) for "
            "point-in-time recovery; the cluster must archive WAL with wal-push, or stream "
            "it with wal-receive.",
        ),
    ] = False,
    wal_slot: Annotated[
        str,
        typer.Option(
            "--wal-slot",
            help="With --physical, for a cluster that does not archive: the replication "
            "slot wal-receive streams through (it must be active).",
        ),
    ] = "strongroom",
    row_counts: Annotated[
        bool,
        typer.Option(
            "--row-counts",
            help="With --physical: also record the rows of every table of every database "
            "(one scan of each table, just before the base backup starts).",
        ),
    ] = False,
) -> None:
    """Back up a database into the repository (running the target's configured hooks)."""
    from strongroom.services.backup import RECORDED, recorded_backup, told_complete
    from strongroom.services.hooks import hooks_of

    sources = Sources.load(config)
    settings = sources.configured(repo, key_file, s3_endpoint)
    url, target = sources.database(database_url, target)
    if not url:
        raise UsageError(
            "no database given: pass DATABASE_URL as an argument, set $DATABASE_URL, "
            "or configure a target in strongroom.toml"
        )
    repository = location_from(sources, repo, key_file, s3_endpoint).open()
    if row_counts and not physical:
        raise UsageError("--row-counts is for base backups: use it with --physical")
    if physical:
        from strongroom.engines.postgresql.physical import physical_engine

        engine = physical_engine(url, wal_slot, row_counts)
    else:
        from strongroom.engines import open_engine

        engine = open_engine(url)
    hooks = hooks_of(settings, target or engine.database_name())
    channels = _channels(sources)
    run: BackupRun | None = None
    try:
        run = recorded_backup(
            repository,
            engine,
            target=target,
            tags=tuple(tag or ()),
            progress=progress_sink(),
            hooks=hooks,
        )
    finally:  # a signal from here on names the backup when it is complete
        with told_complete(_completed(run), RECORDED):
            _write_metrics(repository, metrics_file)
    assert run is not None
    with told_complete(_completed(run), RECORDED):
        _announce(run, channels, repository, tuple(tag or ()))


def _completed(run: BackupRun | None) -> Manifest | None:
    """The manifest of the backup ``run`` completed, if it did."""
    return None if run is None or run.report is None else run.report.manifest


def _announce(
    run: BackupRun,
    channels: tuple[Notifier, NotificationSettings] | None,
    repository: Repository,
    tags: tuple[str, ...],
) -> None:
    """Notify the configured channels (or SLACK_WEBHOOK_URL…), as the scheduler does, then
    print the report, or raise the run's error."""
    if channels is not None:
        from strongroom.services.notifications import notify_backup

        notify_backup(*channels, repository, run.record.target, tags, run)
    if run.error is not None:
        from strongroom.services.hooks import HookFailedAfter

        if isinstance(run.error, HookFailedAfter) and run.report is not None:
            _print_report(run.report)  # post_backup failed: the backup exists, say what it is
        raise run.error
    assert run.report is not None
    _print_report(run.report)


def _channels(sources: Sources) -> tuple[Notifier, NotificationSettings] | None:
    """The notifier and its settings; ``None`` when no channel is configured. Without a
    configuration file or a channel's variable there is none, known without importing the
    configuration's models and the notifiers (0.25 s of a small backup's start-up)."""
    if environment_only(sources):
        return None
    from strongroom.services.notifications import build_notifier

    notifications = sources.notifications()
    notifier = build_notifier(notifications, os.environ)
    return None if notifier is None else (notifier, notifications)


def _print_report(report: BackupReport) -> None:
    m = report.manifest
    share = 100.0 * report.new_plain_bytes / m.raw_size if m.raw_size else 0.0
    stdout.print(f"backup {m.backup_id} complete")
    stdout.print(f"  target       {m.target} ({m.engine} {m.engine_version})")
    chunks = counted(m.chunk_count, "chunk")
    stdout.print(f"  raw size     {human_bytes(m.raw_size)} in {chunks}")
    stdout.print(
        f"  new data     {human_bytes(report.new_plain_bytes)} ({share:.1f}% of raw, "
        f"{counted(m.new_chunk_count, 'new chunk')})"
    )
    stdout.print(f"  new stored   {human_bytes(m.stored_new_bytes)} (compressed, encrypted)")
    if report.new_plain_bytes:
        stdout.print(f"  dedup ratio  {report.dedup_ratio:.1f}x (raw size / new data)")
    else:
        stdout.print("  dedup ratio  all data was already stored (nothing new)")
    stdout.print(f"  duration     {human_seconds(m.duration_seconds)}")


def _write_metrics(repository: Repository, metrics_file: Path | None) -> None:
    if metrics_file is None:
        return
    from strongroom.services import records
    from strongroom.services.metrics import build_registry, write_metrics_file
    from strongroom.services.wal_status import wal_status

    manifests = repository.list_backups()
    registry = build_registry(
        manifests,
        records.runs(repository),
        records.verification_statuses(repository),
        wal_status(repository) if any(m.is_base_backup for m in manifests) else None,
    )
    write_metrics_file(metrics_file, registry)
