"""What one benchmark run found: its measured operations and their results, as dataclasses
that become ``latest.json``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from proc_measure import Measured

MB = 1_000_000
GB = 1_000_000_000


@dataclass
class Artifact:
    """One measured operation: its time, what it stored, its memory."""

    name: str
    seconds: float
    stored_bytes: int | None = None
    peak_rss_bytes: int | None = None  # strongroom's own process (VmHWM)
    tree_maxrss_bytes: int | None = None  # ru_maxrss: max over it and its reaped children
    note: str = ""
    samples: list[float] = field(default_factory=list)  # every run's seconds (best is used)
    cpu_seconds: float | None = None  # client-side CPU (user+sys) of the best run
    load: float | None = None  # 1-minute load average when the best run started


def artifact(
    name: str, runs: Sequence[Measured], stored: int | None = None, note: str = ""
) -> Artifact:
    """The best (fastest) of ``runs``, with the highest peak RSS seen in any of them."""
    hwm = max(m.hwm_kib for m in runs) * 1024
    best = min(runs, key=lambda m: m.seconds)
    return Artifact(
        name=name,
        seconds=round(min(m.seconds for m in runs), 2),
        stored_bytes=stored,
        peak_rss_bytes=hwm or None,
        tree_maxrss_bytes=(max(m.maxrss_kib for m in runs) * 1024) if hwm else None,
        note=note,
        samples=[round(m.seconds, 2) for m in runs],
        cpu_seconds=round(best.cpu_seconds, 2),
        load=round(best.load, 2),
    )


@dataclass
class DayRecord:
    day: int
    gzip_bytes: int
    gzip_cumulative: int
    strongroom_repo_bytes: int
    strongroom_new_stored: int
    raw_bytes: int
    new_plain_bytes: int
    backup_seconds: float
    backup_peak_rss_bytes: int = 0
    churn: dict[str, int] = field(default_factory=dict)


@dataclass
class Target:
    key: str
    description: str
    value: float | None
    limit: float
    unit: str
    issue: bool = True  # one of issue 19's rows (else a row the benchmark adds)
    measured: str = ""  # strongroom's figure, as shown
    baseline: str = ""  # what it is compared with, as shown

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass": self.passed}


@dataclass
class Results:
    config: dict[str, Any]
    environment: dict[str, Any]
    dataset: dict[str, Any] = field(default_factory=dict)
    backups: list[Artifact] = field(default_factory=list)
    restores: list[Artifact] = field(default_factory=list)
    repeat: dict[str, Any] = field(default_factory=dict)
    days: list[DayRecord] = field(default_factory=list)
    days_summary: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    timeline: dict[str, float] = field(default_factory=dict)
    checksums: dict[str, float] = field(default_factory=dict)  # checksum_cost.measure()
    unchanged: dict[str, Any] = field(default_factory=dict)  # measure_backup.unchanged_small
    objects: dict[str, Any] = field(default_factory=dict)  # objects per GB, local repositories
    s3: dict[str, Any] = field(default_factory=dict)  # measure_s3.measure
    memory: dict[str, Any] = field(default_factory=dict)  # measure_memory.measure

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "environment": self.environment,
            "dataset": self.dataset,
            "backups": [asdict(a) for a in self.backups],
            "restores": [asdict(a) for a in self.restores],
            "repeat": self.repeat,
            "days": [asdict(d) for d in self.days],
            "days_summary": self.days_summary,
            "targets": [t.as_dict() for t in self.targets],
            "timeline_seconds": self.timeline,
            "checksum_cost": self.checksums,
            "unchanged_small": self.unchanged,
            "objects": self.objects,
            "s3": self.s3,
            "memory": self.memory,
        }
