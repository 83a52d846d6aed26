"""Prometheus metrics per target, written as a node-exporter textfile (``--metrics-file``).

``prometheus_client`` (~0.1 s to import) is imported by the functions that use it: the
commands that import this module but write no metrics (``health`` without
``--metrics-file``) do not pay for it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.runs import RunRecord
from strongroom.repository.verifications import VerificationStatus
from strongroom.retention import is_regular
from strongroom.services.wal_status import WalStatus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def build_registry(
    manifests: list[Manifest],
    runs: list[RunRecord],
    verifications: Mapping[str, VerificationStatus],
    wal: WalStatus | None = None,
) -> CollectorRegistry:
    """Gauges for every target seen in the repository's manifests and run records;
    ``verifications`` by backup id (``records.verification_statuses``): the drill gauges
    read each backup's newest restore drill, never a read check."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    label = ["target"]
    last_success = Gauge(
        "strongroom_last_success_timestamp_seconds",
        "Unix time the newest complete backup finished",
        label,
        registry=registry,
    )
    duration = Gauge(
        "strongroom_last_backup_duration_seconds",
        "Duration of the newest backup",
        label,
        registry=registry,
    )
    raw = Gauge(
        "strongroom_last_backup_raw_bytes",
        "Raw dump size of the newest backup",
        label,
        registry=registry,
    )
    stored = Gauge(
        "strongroom_last_backup_stored_bytes",
        "New bytes the newest backup stored (after dedup, compression, encryption)",
        label,
        registry=registry,
    )
    failures = Gauge(
        "strongroom_backup_failures_total",
        "Failed backup runs recorded in the repository",
        label,
        registry=registry,
    )
    drill_time = Gauge(
        "strongroom_last_verified_restore_timestamp_seconds",
        "Unix time of the newest passed restore drill",
        label,
        registry=registry,
    )
    drill_duration = Gauge(
        "strongroom_last_verified_restore_duration_seconds",
        "Restore time (RTO) measured by the newest passed restore drill",
        label,
        registry=registry,
    )
    targets = {m.target for m in manifests} | {r.target for r in runs}
    for target in sorted(targets):
        own = [m for m in manifests if m.target == target and is_regular(m.tags)]
        if own:
            newest = max(own, key=lambda m: m.finished_at)
            last_success.labels(target).set(parse_iso(newest.finished_at).timestamp())
            duration.labels(target).set(newest.duration_seconds)
            raw.labels(target).set(newest.raw_size)
            stored.labels(target).set(newest.stored_new_bytes)
        failures.labels(target).set(
            sum(1 for r in runs if r.target == target and r.kind == "backup" and not r.ok)
        )
        drills = [
            drill
            for m in own
            if m.backup_id in verifications
            for drill in [verifications[m.backup_id].last_drill]
            if drill is not None and drill.ok
        ]
        if drills:
            newest_drill = max(drills, key=lambda v: v.verified_at)
            drill_time.labels(target).set(parse_iso(newest_drill.verified_at).timestamp())
            drill_duration.labels(target).set(newest_drill.restore_seconds or 0.0)
    if wal is not None:
        _wal_gauges(registry, wal)
    return registry


def _wal_gauges(registry: CollectorRegistry, wal: WalStatus) -> None:
    """Per target and stream with base backups: archiving lag, last segment time, gap."""
    from prometheus_client import Gauge

    labels = ["target", "stream"]
    lag = Gauge(
        "strongroom_wal_archive_lag_seconds",
        "Seconds since the newest WAL segment was archived",
        labels,
        registry=registry,
    )
    last = Gauge(
        "strongroom_wal_last_segment_timestamp_seconds",
        "Unix time the newest WAL segment was archived (its object's modified time)",
        labels,
        registry=registry,
    )
    gap = Gauge(
        "strongroom_wal_gap",
        "1 when WAL a retained base backup needs is missing (or a timeline's history), else 0",
        labels,
        registry=registry,
    )
    for stream in wal.streams:
        for target in stream.targets:
            if stream.lag_seconds is not None:
                lag.labels(target, stream.stream).set(stream.lag_seconds)
            if stream.newest_time is not None:
                last.labels(target, stream.stream).set(stream.newest_time.timestamp())
            gap.labels(target, stream.stream).set(1 if stream.gaps or stream.unsure else 0)


def write_metrics_file(path: Path, registry: CollectorRegistry) -> None:
    """Atomically (temp file + rename) write the registry in the text exposition format."""
    from prometheus_client import write_to_textfile

    write_to_textfile(str(path), registry)
