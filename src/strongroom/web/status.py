"""Health, metrics and next runs for the API, the dashboard and ``/metrics``."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prometheus_client import generate_latest

from strongroom.services import records
from strongroom.services.health import TargetHealth, evaluate_target, overall, with_wal
from strongroom.services.metrics import build_registry
from strongroom.services.schedule import interval_of, jobs_of, next_run
from strongroom.services.wal_status import WalStatus, wal_status
from strongroom.web.context import WebContext

CACHE_SECONDS = 10.0
_cache: dict[int, tuple[float, dict[str, Any]]] = {}
_wal: dict[int, WalStatus | None] = {}  # the WAL status health_report computed with it
_lock = threading.Lock()


def health_report(ctx: WebContext) -> dict[str, Any]:
    """What ``strongroom health --json`` prints (cached for a few seconds)."""
    key = id(ctx)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
    repo = ctx.repository()
    now = datetime.now(UTC)
    manifests = repo.list_backups()
    runs = records.runs(repo)
    verifications = records.verification_statuses(repo)
    names = sorted(set(ctx.settings.targets) or {m.target for m in manifests})
    # targets of base backups (point-in-time recovery) too: their WAL is judged
    names = sorted(set(names) | {m.target for m in manifests if m.is_base_backup})
    results: list[TargetHealth] = []
    for name in names:
        target = ctx.settings.targets.get(name)
        crons = list(target.schedule.values()) if target else []
        interval = interval_of(crons, now, ctx.settings.timezone)
        results.append(
            evaluate_target(name, manifests, runs, verifications, interval, ctx.settings.grace, now)
        )
    wal = wal_status(repo, now=now) if any(m.is_base_backup for m in manifests) else None
    if wal is not None:
        results = with_wal(results, wal, ctx.settings.wal.recovery_point_delta)
    report = {
        "status": overall(results),
        "checked_at": now.isoformat(),
        "targets": [asdict(r) for r in results],
    }
    with _lock:
        _cache[key] = (time.monotonic(), report)
        _wal[key] = wal
    return report


def target_wal(ctx: WebContext, name: str) -> dict[str, Any] | None:
    """The WAL of target ``name``'s base backups as the dashboard card and ``GET
    /api/targets`` show it (stream and segment names: signed-in users only, never
    ``/api/health``); ``None`` for a target without base backups."""
    health_report(ctx)
    with _lock:
        wal = _wal.get(id(ctx))
    streams = wal.for_target(name) if wal is not None else []
    if not streams:
        return None
    newest = max(streams, key=lambda s: s.newest_time.timestamp() if s.newest_time else 0.0)
    starts = [s.window_start for s in streams if s.window_start is not None]
    lags = [s.lag_seconds for s in streams if s.lag_seconds is not None]
    gaps = [g for s in streams for g in s.gaps]
    return {
        "streams": [s.stream for s in streams],
        "window_start": _iso(min(starts)) if starts else None,
        "window_end": _iso(newest.window_end),
        "last_segment": newest.newest_segment,
        "last_segment_at": _iso(newest.newest_time),
        "lag_seconds": round(min(lags), 3) if lags else None,
        "gap": bool(gaps),
        "first_missing": gaps[0].first_missing if gaps else None,
        "unsure": [why for s in streams for why in s.unsure],
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def forget_cache(ctx: WebContext) -> None:
    with _lock:
        _cache.pop(id(ctx), None)
        _wal.pop(id(ctx), None)


def metrics_text(ctx: WebContext) -> bytes:
    repo = ctx.repository()
    manifests = repo.list_backups()
    wal = wal_status(repo) if any(m.is_base_backup for m in manifests) else None
    registry = build_registry(
        manifests, records.runs(repo), records.verification_statuses(repo), wal
    )
    return generate_latest(registry)


def next_runs(ctx: WebContext) -> dict[str, str]:
    """The next scheduled backup of each target (ISO time in the configured zone)."""
    now = datetime.now(UTC)
    result: dict[str, datetime] = {}
    for job in jobs_of(ctx.settings):
        if job.kind != "backup":
            continue
        moment = next_run(job, now, ctx.settings.timezone)
        # compared in UTC: times of one zone compare by wall clock (wrong in a repeated hour)
        if job.target not in result or moment.astimezone(UTC) < result[job.target].astimezone(UTC):
            result[job.target] = moment
    return {name: moment.isoformat() for name, moment in result.items()}
