"""strongroom config check / run / schedule / health"""

from __future__ import annotations

import json
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from strongroom import interrupts
from strongroom.cli.options import ConfigOption
from strongroom.cli.output import stdout
from strongroom.errors import UsageError
from strongroom.repository.repository import Repository
from strongroom.services import records
from strongroom.services.settings_sources import load_settings, open_configured

if TYPE_CHECKING:
    from strongroom.config import Settings

MetricsFileOption = Annotated[
    Path | None,
    typer.Option("--metrics-file", help="Also write Prometheus metrics to this textfile."),
]

config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


def open_repository(settings: Settings) -> Repository:
    return open_configured(settings)


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration; name the field and line of every error."""
    from strongroom.config import ConfigError

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            stdout.print(f"{exc.path}: {problem}", markup=False)
        raise UsageError(f"{len(exc.problems)} problem(s) in the configuration") from exc
    problems = []
    for name, target in settings.targets.items():
        if target.url_env and not os.environ.get(target.url_env):
            problems.append(f"targets.{name}.url_env: {target.url_env} is not set here")
    for problem in problems:
        stdout.print(f"warning: {problem}", markup=False)
    stdout.print(
        f"configuration ok: repository {settings.repository.location}, "
        f"{len(settings.targets)} target(s), {len(settings.notifications.channels)} channel(s), "
        f"time zone {settings.timezone}",
        markup=False,
    )


def schedule(config: ConfigOption = None) -> None:
    """List the next runs of every scheduled job."""
    from strongroom.services.daemon import upcoming_runs

    settings = load_settings(config)
    table = Table(box=None, pad_edge=False)
    for column in ("JOB", "CRON", "NEXT RUNS"):
        table.add_column(column)
    for job, times in upcoming_runs(settings, datetime.now(UTC)):
        table.add_row(
            job.job_id, job.cron, ", ".join(t.strftime("%Y-%m-%d %H:%M %Z") for t in times)
        )
    stdout.print(table)


def run(
    config: ConfigOption = None,
    metrics_file: MetricsFileOption = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (for cron).")] = False,
) -> None:
    """Run scheduled backups, retention, prune and restore drills in the foreground.

    With --once, the exit code is 0 when every due job succeeded, else the first failed
    job's own code (5 database, 6 storage, 7 failed drill, 8 hook...).

    SIGTERM or Ctrl-C: the running job finishes, then strongroom exits; a second signal
    abandons it cleanly (no backup is recorded unless its manifest was written)."""
    from strongroom.services.daemon import Daemon, JobsFailed
    from strongroom.services.notifications import build_notifier

    settings = load_settings(config)
    daemon = Daemon(
        settings,
        open_repository(settings),
        dict(os.environ),
        notifier=build_notifier(settings.notifications, os.environ),
        metrics_file=metrics_file,
    )
    if once:
        daemon.tick()
        if daemon.failures:  # cron, systemd and Kubernetes must see the failure
            raise JobsFailed(daemon.failures)
        return
    signals = {"count": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            daemon.stop.set()
            return
        interrupts.handle(signum, _frame)  # raises (exit 128 + signum, one error: line)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    daemon.run_forever()


def health(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
    metrics_file: MetricsFileOption = None,
) -> None:
    """Exit 0 healthy, 1 warning, 2 critical: backup age, last run, last restore drill."""
    from strongroom.services.health import EXIT_CODES, evaluate_target, overall, with_wal
    from strongroom.services.metrics import build_registry, write_metrics_file
    from strongroom.services.schedule import interval_of
    from strongroom.services.wal_status import wal_status

    settings = load_settings(config)
    repo = open_repository(settings)
    now = datetime.now(UTC)
    manifests = repo.list_backups()
    runs = records.runs(repo)
    verifications = records.verification_statuses(repo)
    names = sorted(set(settings.targets) or {m.target for m in manifests})
    # targets of base backups (point-in-time recovery) too: their WAL is judged
    names = sorted(set(names) | {m.target for m in manifests if m.is_base_backup})
    results = []
    for name in names:
        target = settings.targets.get(name)
        crons = list(target.schedule.values()) if target else []
        interval = interval_of(crons, now, settings.timezone)
        results.append(
            evaluate_target(name, manifests, runs, verifications, interval, settings.grace, now)
        )
    wal = wal_status(repo, now=now) if any(m.is_base_backup for m in manifests) else None
    if wal is not None:
        results = with_wal(results, wal, settings.wal.recovery_point_delta)
    status = overall(results)
    spool = None
    if settings.wal.spool:  # what waits for upload, and whether wal-push could spool
        from strongroom.services.wal_spool import spool_health

        recovery_point = settings.wal.recovery_point_delta.total_seconds()
        spool = spool_health(Path(settings.wal.spool).expanduser(), recovery_point)
        status = max(status, spool.status, key=EXIT_CODES.__getitem__)
    if metrics_file is not None:
        write_metrics_file(metrics_file, build_registry(manifests, runs, verifications, wal))
    if as_json:
        stdout.print_json(
            json.dumps(
                {
                    "status": status,
                    "checked_at": now.isoformat(),
                    "targets": [r.__dict__ for r in results],
                    "wal_spool": spool.__dict__ if spool is not None else None,
                }
            )
        )
    else:
        for r in results:
            newest = (
                f"{r.newest_age_seconds / 3600:.1f} h old"
                if r.newest_age_seconds is not None
                else "none"
            )
            reasons = "; ".join(r.reasons) or "ok"
            stdout.print(
                f"{r.status.upper():<9} {r.target}: newest good backup {newest}; {reasons}",
                markup=False,
            )
            if r.wal_gap is not None:
                lag = f"{r.wal_lag_seconds / 60:.1f} min" if r.wal_lag_seconds is not None else "?"
                window = (
                    f"recoverable {r.wal_window_start} to {r.wal_window_end}"
                    if r.wal_window_start
                    else "no recoverable window yet"
                )
                stdout.print(
                    f"{'':<9} WAL: {window}; last segment {r.wal_last_segment_at or 'none'} "
                    f"(lag {lag}); {'GAP (strongroom check names it)' if r.wal_gap else 'no gap'}",
                    markup=False,
                )
        if spool is not None:
            oldest = spool.oldest_age_seconds
            waits = f"oldest waits {oldest / 60:.1f} min" if oldest is not None else "empty"
            stdout.print(
                f"{spool.status.upper():<9} WAL spool {spool.spool}: {spool.files} file(s), "
                f"{spool.bytes} bytes waiting, {waits}; {'; '.join(spool.reasons) or 'ok'}",
                markup=False,
            )
        stdout.print(f"overall: {status}")
    raise typer.Exit(EXIT_CODES[status])
