"""Health, metrics and next runs for the API, the dashboard and ``/metrics``."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prometheus_client import generate_latest

from strongroom.services import records
from strongroom.services.health import TargetHealth, evaluate_target, overall
from strongroom.services.metrics import build_registry
from strongroom.services.schedule import interval_of, jobs_of, next_run
from strongroom.web.context import WebContext

CACHE_SECONDS = 10.0
_cache: dict[int, tuple[float, dict[str, Any]]] = {}
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
    results: list[TargetHealth] = []
    for name in names:
        target = ctx.settings.targets.get(name)
        crons = list(target.schedule.values()) if target else []
        interval = interval_of(crons, now, ctx.settings.timezone)
        results.append(
            evaluate_target(name, manifests, runs, verifications, interval, ctx.settings.grace, now)
        )
    report = {
        "status": overall(results),
        "checked_at": now.isoformat(),
        "targets": [asdict(r) for r in results],
    }
    with _lock:
        _cache[key] = (time.monotonic(), report)
    return report


def forget_cache(ctx: WebContext) -> None:
    with _lock:
        _cache.pop(id(ctx), None)


def metrics_text(ctx: WebContext) -> bytes:
    repo = ctx.repository()
    registry = build_registry(
        repo.list_backups(), records.runs(repo), records.verification_statuses(repo)
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
