"""Memory at size: the peak RSS of ``strongroom backup`` and ``restore`` at every database
size of the run (the benchmark database, the daily-simulation database, and a large one
made cheaply of big text values), a straight-line extrapolation to 10 GB, and the local
index cache's bytes per chunk with what that means for a 1 TB repository."""

from __future__ import annotations

import shutil
from typing import Any

from harness import Bench
from repo_stats import index_cache, latest_backup_stats, tree_bytes
from report_format import mb, secs
from results_model import GB, Results

BIG_DB = "app_big"
ROW_BYTES = 1 << 20  # one row: 1 MiB of text, 8,192 distinct sha512 hex digests
ROWS_PER_INSERT = 32
TB = 1_000_000_000_000
EXTRAPOLATE_TO = 10 * GB  # the issue: "Memory stays bounded for a 10 GB database"
#: below this raw size the RSS is start-up and noise: no line is drawn through it
MIN_FIT_RAW = 100_000_000
BIG_SMALLER = 0.25  # the second, smaller text-value database: this share of --big-gb


def generate_big(bench: Bench, raw_target: int) -> dict[str, Any]:
    """A table of 1 MiB text values, each distinct (sha512 of its row and position), stored
    uncompressed (``STORAGE EXTERNAL``): about ``raw_target`` bytes of dump in seconds per
    GB, where the app generator would take minutes. Not app-shaped: one big table whose
    values dump as long lines, chunked like any other bytes (hex text, zstd about 2x)."""
    rows = max(1, raw_target // ROW_BYTES)
    bench.server.create_database(BIG_DB)
    with bench.server.connect(BIG_DB) as conn:
        conn.execute("CREATE TABLE blobs (id integer PRIMARY KEY, body text NOT NULL)")
        conn.execute("ALTER TABLE blobs ALTER COLUMN body SET STORAGE EXTERNAL")
        for first in range(1, rows + 1, ROWS_PER_INSERT):
            last = min(rows, first + ROWS_PER_INSERT - 1)
            conn.execute(
                "INSERT INTO blobs SELECT g, (SELECT string_agg(encode(sha512(convert_to("
                "g || ':' || i, 'UTF8')), 'hex'), '') FROM generate_series(1, %s::int) AS i) "
                "FROM generate_series(%s::int, %s::int) AS g",
                (ROW_BYTES // 128, first, last),
            )
            conn.commit()
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return {"rows": rows, "database_bytes": int(row[0])}


def big_point(bench: Bench, raw_target: int, label: str) -> dict[str, Any]:
    """Generate a large database, back it up and restore it, each with its peak RSS."""
    bench.say(f"memory at size: generating a {mb(raw_target)} database of 1 MiB text values")
    dataset = generate_big(bench, raw_target)
    bench.say(f"  {mb(dataset['database_bytes'])}, {dataset['rows']:,} rows")
    repo = bench.work / "repo-big"
    key = bench.work / "big.key"
    url = bench.server.url(BIG_DB)
    bench.run("strongroom init (big)", bench.sr("init", "--repo", repo, "--key-file", key))
    bench.say("memory at size: strongroom backup")
    backup = bench.run(
        "strongroom backup (big)",
        bench.sr("backup", url, "--repo", repo, "--key-file", key),
        rss=True,
    )
    stats = latest_backup_stats(repo)
    bench.say(f"  {secs(backup.seconds)}, peak RSS {mb(backup.hwm_kib * 1024)}")
    cache = index_cache(bench.cache_dir, repo)
    bench.server.drop_database(BIG_DB)  # room for the restore
    bench.say("memory at size: strongroom restore")
    restored = "app_big_restored"
    restore = bench.run(
        "strongroom restore (big)",
        bench.sr(
            "restore",
            "latest",
            "--to",
            bench.server.url(restored),
            "--repo",
            repo,
            "--key-file",
            key,
            "--yes",
        ),
        rss=True,
    )
    bench.say(f"  {secs(restore.seconds)}, peak RSS {mb(restore.hwm_kib * 1024)}")
    bench.server.drop_database(restored)
    point = {
        "label": label,
        "database_bytes": dataset["database_bytes"],
        "raw_bytes": stats["raw_bytes"],
        "chunks": stats["chunks"],
        "stored_bytes": tree_bytes(repo),
        "backup_seconds": round(backup.seconds, 2),
        "restore_seconds": round(restore.seconds, 2),
        "backup_rss_bytes": backup.hwm_kib * 1024,
        "restore_rss_bytes": restore.hwm_kib * 1024,
        "index_cache": cache,
    }
    shutil.rmtree(repo, ignore_errors=True)
    key.unlink(missing_ok=True)
    return point


def fit(points: list[tuple[int, int]]) -> tuple[float, float] | None:
    """Least-squares line ``rss = a + b * raw`` through (raw, rss) points (two or more
    distinct sizes), else None. ``measure`` passes the two text-value sizes."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return mean_y - slope * mean_x, slope


def measure(bench: Bench, res: Results, big_raw_bytes: int) -> None:
    points: list[dict[str, Any]] = []
    sr = next((a for a in res.backups if a.name == "strongroom backup (first)"), None)
    srr = next((a for a in res.restores if a.name == "strongroom restore"), None)
    if sr is not None:
        points.append(
            {
                "label": "benchmark database",
                "database_bytes": res.dataset["database_bytes"],
                "raw_bytes": res.dataset["raw_dump_bytes"],
                "backup_rss_bytes": sr.peak_rss_bytes or 0,
                "restore_rss_bytes": (srr.peak_rss_bytes or 0) if srr else 0,
            }
        )
    if res.days:
        points.append(
            {
                "label": f"daily-simulation database, {len(res.days)} backups",
                "database_bytes": res.days_summary["database_bytes"],
                "raw_bytes": res.days[-1].raw_bytes,
                "backup_rss_bytes": max(d.backup_peak_rss_bytes for d in res.days),
                "restore_rss_bytes": 0,
            }
        )
    big: list[dict[str, Any]] = []
    if big_raw_bytes > 0:  # two sizes of the same shape: the slope between them
        for share, label in ((BIG_SMALLER, "text values, 1/4 size"), (1.0, "text values")):
            big.append(big_point(bench, round(big_raw_bytes * share), label))
    points = sorted(points + big, key=lambda p: int(p["raw_bytes"]))
    out: dict[str, Any] = {"points": points}
    if not big:
        out["no_fit"] = "not extrapolated: no text-value databases (--big-gb 0)"
    elif int(big[0]["raw_bytes"]) < MIN_FIT_RAW:
        out["no_fit"] = (
            f"not extrapolated: the smaller text-value database is under {MIN_FIT_RAW // 10**6} "
            "MB raw"
        )
    for what in ("backup", "restore"):
        key = f"{what}_rss_bytes"
        # the two text-value sizes (same shape): the growth with size, not with shape or
        # the start-up's fixed cost
        pairs = [(int(p["raw_bytes"]), int(p[key])) for p in big if p[key]][-2:]
        if "no_fit" in out or len(pairs) < 2:
            continue
        line = fit(pairs)
        if line is not None:
            a, b = line
            out[f"{what}_fit"] = {
                "intercept_bytes": round(a),
                "bytes_per_raw_gb": round(b * GB),
                "at_10_gb_bytes": round(a + b * EXTRAPOLATE_TO),
            }
    cache = next(
        (p["index_cache"] for p in reversed(points) if p.get("index_cache")), None
    ) or res.objects.get("days", {}).get("index_cache")
    if cache and cache.get("bytes_per_chunk"):
        chunk_plain = _average_chunk(points, res)
        out["index_cache"] = {
            **cache,
            "average_chunk_bytes": round(chunk_plain) if chunk_plain else None,
            "chunks_per_tb": round(TB / chunk_plain) if chunk_plain else None,
            "cache_bytes_per_tb": (
                round(TB / chunk_plain * cache["bytes_per_chunk"]) if chunk_plain else None
            ),
        }
    res.memory = out


def _average_chunk(points: list[dict[str, Any]], res: Results) -> float | None:
    """Average plaintext bytes per chunk: of the largest database measured with chunks."""
    for p in reversed(points):
        if p.get("chunks"):
            return int(p["raw_bytes"]) / int(p["chunks"])
    first = res.objects.get("first_backup", {})
    if first.get("chunks"):
        return int(first["backed_up_bytes"]) / int(first["chunks"])
    return None
