"""Notifications for the WAL of targets with base backups, sent by the scheduler (``run``,
``run --once``, ``serve``) once per change of state, as staleness alerts are
(``services/alerts.py``):

- ``wal_lagging`` (under ``on_stale``): the newest archived segment of the target's
  streams is older than ``[wal] recovery_point`` (what ``health`` warns about), or no WAL
  is archived at all and its newest base backup ended longer ago than that. The
  condition is the newest segment's name (``none``: no WAL): a lag that persists alerts
  once; WAL arriving ends it; a later lag (behind a newer segment) alerts again.
- ``wal_gap`` (under ``on_failure``): WAL a retained base backup needs is missing (what
  ``health`` is critical about, ``check`` names). The condition is the first missing
  segment of each gap: another gap alerts again.

When a condition ends, its record is removed and one INFO line says so (the staleness
alerts send no "recovered" event either).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from strongroom.config import Settings
from strongroom.notify.events import DetailValue, Event
from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.services.alerts import (
    NO_GOOD_BACKUP,
    WAL_GAP_PREFIX,
    WAL_LAG_PREFIX,
    alert_once,
    clear_alert,
    open_alerts,
)
from strongroom.services.wal_status import StreamStatus, WalStatus
from strongroom.storage.base import Storage

log = logging.getLogger("strongroom.daemon")

NO_WAL = NO_GOOD_BACKUP  # the lag condition when no WAL is archived ("none")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


@dataclass(frozen=True)
class WalAlert:
    """One condition of a target's WAL that alerts: its record's name and its event."""

    condition: str
    event: Event


def lag_alert(
    target: str,
    streams: list[StreamStatus],
    newest_base_at: datetime | None,
    recovery_point: timedelta,
    now: datetime,
) -> WalAlert | None:
    """The lag alert of ``target`` (its streams, ``WalStatus.for_target``), or ``None``
    when its WAL is recent enough. The lag is the smallest of its streams' (as health
    judges it)."""
    limit = recovery_point.total_seconds()
    lagging = [s for s in streams if s.lag_seconds is not None]
    rpo = {"recovery_point_seconds": round(limit)}
    if lagging:
        stream = min(lagging, key=lambda s: s.lag_seconds or 0.0)
        lag = stream.lag_seconds or 0.0
        if lag <= limit:
            return None
        summary = (
            f"WAL archiving of {target} lags {_minutes(lag)} (recovery point "
            f"{_minutes(limit)}): the last segment, {stream.newest_segment}, reached the "
            f"repository at {_iso(stream.newest_time)}; is archive_command failing, or the "
            "uploader stopped? (an idle server archives only at archive_timeout)"
        )
        details = {
            "lag_seconds": round(lag, 1),
            **rpo,
            "last_segment": stream.newest_segment,
            "last_segment_at": _iso(stream.newest_time),
            "stream": stream.stream,
        }
        return WalAlert(str(stream.newest_segment), Event("wal_lagging", target, summary, details))
    if any(s.newest_segment for s in streams) or newest_base_at is None:
        return None  # segments without listed times: the lag is unknown (health says so)
    if (now - newest_base_at).total_seconds() <= limit:
        return None  # a new base backup: its WAL may still be on its way
    summary = (
        f"no WAL archived for the base backups of {target} (recovery point "
        f"{_minutes(limit)}; the newest base backup ended at {_iso(newest_base_at)}): is "
        "archive_command set to strongroom wal-push?"
    )
    details = {"lag_seconds": None, **rpo, "last_segment": None, "last_segment_at": None}
    return WalAlert(NO_WAL, Event("wal_lagging", target, summary, details))


def gap_alert(target: str, streams: list[StreamStatus]) -> WalAlert | None:
    """The gap alert of ``target``, or ``None`` when its WAL has no gap."""
    gaps = [g for s in streams for g in s.gaps]
    if not gaps:
        return None
    first = gaps[0]
    backups = sorted({b for g in gaps for b in g.backup_ids})
    more = f" and {len(gaps) - 1} more gap(s)" if len(gaps) > 1 else ""
    summary = (
        f"WAL of {target} has a gap: {first.first_missing} is missing ({first.missing} "
        f"segment(s)){more}; {len(backups)} base backup(s) cannot be recovered past it "
        "(strongroom check names every gap; wal-push the segment from pg_wal if it is "
        "still there, or take a new base backup)"
    )
    details: dict[str, DetailValue] = {
        "first_missing": first.first_missing,
        "missing_segments": first.missing,
        "gaps": len(gaps),
        "stream": first.stream,
        "backup_ids": ", ".join(backups),
    }
    condition = " ".join(f"{g.stream}/{g.first_missing}" for g in gaps)
    return WalAlert(condition, Event("wal_gap", target, summary, details))


def _newest_base(manifests: list[Manifest], target: str) -> datetime | None:
    times = [parse_iso(m.finished_at) for m in manifests if m.is_base_backup and m.target == target]
    return max(times) if times else None


def check_wal_alerts(
    storage: Storage,
    settings: Settings,
    manifests: list[Manifest],
    status: WalStatus,
    now: datetime,
    notify: Callable[[Event], bool],
) -> None:
    """Alert (through ``notify``: ``True`` when a channel took it) the lag and gap of every
    target with base backups, once per condition; clear the records of conditions over."""
    checks: list[tuple[str, str, Callable[[str, list[StreamStatus]], WalAlert | None]]] = []
    recovery_point = settings.wal.recovery_point_delta
    if settings.notifications.on_stale:

        def lag(target: str, streams: list[StreamStatus]) -> WalAlert | None:
            return lag_alert(target, streams, _newest_base(manifests, target), recovery_point, now)

        back = "WAL archiving of {} is within the recovery point again"
        checks.append((WAL_LAG_PREFIX, back, lag))
    if settings.notifications.on_failure:
        checks.append((WAL_GAP_PREFIX, "WAL of {} has no gap any more", gap_alert))
    targets = sorted({m.target for m in manifests if m.is_base_backup})
    for prefix, over, judge in checks:
        alerts = open_alerts(storage, prefix)
        for target in targets:
            streams = status.for_target(target)
            if not streams:
                continue
            alert = judge(target, streams)
            if alert is None:
                if clear_alert(alerts, prefix, target):
                    log.info(over.format(target))
                continue
            if alert_once(alerts, prefix, target, alert.condition, partial(notify, alert.event)):
                log.warning("%s", alert.event.summary)
