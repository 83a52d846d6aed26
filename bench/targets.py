"""The targets: issue 19's table (exactly its rows and limits) and the benchmark's own extra
rows, each computed from a run's results with strongroom's figure and its baseline side by
side. Reported (PASS/MISS), never asserted."""

from __future__ import annotations

from typing import Any

from report_format import mb, ratio, secs
from results_model import MB, Artifact, Results, Target

# key -> (description, limit, unit, one of issue 19's rows)
TARGETS: dict[str, tuple[str, float, str, bool]] = {
    "backup_time": ("first backup / pg_dump -Fc -Z0 > file", 1.3, "x", True),
    "restore_time": ("verified restore / pg_restore -j2 (local -Z0 file)", 1.15, "x", True),
    "repeat_new": ("repeat backup after one day of churn: new data / raw dump", 10.0, "%", True),
    "days_storage": ("30 daily backups stored / one pg_dump | gzip file", 4.5, "x", True),
    "unchanged_new": (
        "second backup of an unchanged ~1.8 MiB database: new stored / raw dump",
        2.0,
        "%",
        True,
    ),
    "rss_backup": ("peak RSS, backup (highest at any database size measured)", 200.0, "MB", True),
    "rss_restore": (
        "peak RSS, restore (highest at any database size measured)",
        200.0,
        "MB",
        True,
    ),
    "backup_size": ("first backup stored / pg_dump | gzip file", 1.0, "x", False),
    "repeat_time": ("repeat backup time / pg_dump -Fc -Z0 > file", 1.15, "x", False),
}


def _peak(points: list[tuple[int, str]]) -> tuple[float | None, str]:
    """The highest (RSS bytes, where) of ``points``, in MB, and where it was measured."""
    if not points:
        return None, ""
    rss, where = max(points)
    return rss / MB, f"{mb(rss)} ({where})"


def _rss_points(res: Results, key: str, main: Artifact | None) -> list[tuple[int, str]]:
    points: list[tuple[int, str]] = []
    if main is not None and main.peak_rss_bytes:
        raw = res.dataset.get("raw_dump_bytes")
        points.append((main.peak_rss_bytes, f"benchmark database, {mb(raw)} raw"))
    for point in res.memory.get("points", []):
        if point.get(key):
            points.append((int(point[key]), f"{point['label']}, {mb(point['raw_bytes'])} raw"))
    return points


def compute(res: Results, days: int) -> list[Target]:
    by = {a.name: a for a in res.backups}
    raw = by.get("pg_dump -Fc -Z0 > file (raw)")
    gz = by.get("pg_dump | gzip")
    sr = by.get("strongroom backup (first)")
    rs = {a.name: a for a in res.restores}
    pgr = rs.get("pg_restore -j2 (local -Z0 file)")
    srr = rs.get("strongroom restore")
    r: dict[str, Any] = res.repeat
    s: dict[str, Any] = res.days_summary
    u: dict[str, Any] = res.unchanged
    rss_backup, rss_backup_text = _peak(_rss_points(res, "backup_rss_bytes", sr))
    rss_restore, rss_restore_text = _peak(_rss_points(res, "restore_rss_bytes", srr))
    rows: dict[str, tuple[float | None, str, str]] = {
        "backup_time": (
            ratio(sr.seconds if sr else None, raw.seconds if raw else None),
            secs(sr.seconds if sr else None),
            f"pg_dump -Fc -Z0 > file {secs(raw.seconds if raw else None)}",
        ),
        "restore_time": (
            ratio(srr.seconds if srr else None, pgr.seconds if pgr else None),
            secs(srr.seconds if srr else None),
            f"pg_restore -j2 {secs(pgr.seconds if pgr else None)}",
        ),
        "repeat_new": (
            100 * r["new_plain_bytes"] / r["raw_bytes"] if r.get("raw_bytes") else None,
            f"new data {mb(r.get('new_plain_bytes'))}",
            f"raw dump {mb(r.get('raw_bytes'))}",
        ),
        "days_storage": (
            ratio(s.get("strongroom_total_bytes"), s.get("full_gzip_bytes")),
            f"repository {mb(s.get('strongroom_total_bytes'))}",
            f"one pg_dump | gzip {mb(s.get('full_gzip_bytes'))}",
        ),
        "unchanged_new": (
            100 * u["stored_new_bytes"] / u["raw_bytes"] if u.get("raw_bytes") else None,
            f"{u['stored_new_bytes']:,} B new stored" if u else "-",
            f"raw dump {u['raw_bytes']:,} B" if u else "-",
        ),
        "rss_backup": (rss_backup, rss_backup_text or "-", "limit at any size"),
        "rss_restore": (rss_restore, rss_restore_text or "-", "limit at any size"),
        "backup_size": (
            ratio(sr.stored_bytes if sr else None, gz.stored_bytes if gz else None),
            f"repository {mb(sr.stored_bytes if sr else None)}",
            f"pg_dump | gzip {mb(gz.stored_bytes if gz else None)}",
        ),
        "repeat_time": (
            ratio(r.get("strongroom_seconds"), r.get("raw_seconds")),
            secs(r.get("strongroom_seconds")),
            f"pg_dump -Fc -Z0 > file {secs(r.get('raw_seconds'))}",
        ),
    }
    out = []
    for key, (desc, limit, unit, issue) in TARGETS.items():
        value, measured, baseline = rows[key]
        out.append(
            Target(
                key,
                desc.replace("30 daily", f"{days} daily"),
                None if value is None else round(value, 4),
                limit,
                unit,
                issue=issue,
                measured=measured,
                baseline=baseline,
            )
        )
    return out
