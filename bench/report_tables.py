"""The tables of a run's report, as (title, header, rows), for stdout and Markdown alike."""

from __future__ import annotations

import checksum_cost
from report_format import (
    count,
    fx,
    load,
    mb,
    pct,
    ratio,
    secs,
    target_limit,
    target_value,
    verdict,
)
from results_model import GB, MB, Results

Section = tuple[str, list[str], list[list[str]]]


def report_sections(res: Results) -> list[Section]:
    """(title, header, rows) of every table, for stdout and Markdown alike."""
    raw = next((a for a in res.backups if a.name.startswith("pg_dump -Fc -Z0")), None)
    gz = next((a for a in res.backups if a.name.startswith("pg_dump | gzip")), None)
    sections: list[Section] = []
    rows = []
    for a in res.backups:
        rows.append(
            [
                a.name,
                secs(a.seconds),
                fx(ratio(a.seconds, raw.seconds if raw else None)),
                mb(a.stored_bytes),
                fx(ratio(a.stored_bytes, gz.stored_bytes if gz else None)),
                "-" if a.peak_rss_bytes is None else mb(a.peak_rss_bytes),
                secs(a.cpu_seconds),
                load(a.load),
            ]
        )
    sections.append(
        (
            "Backup (to local disk)",
            [
                "tool",
                "time",
                "time / raw",
                "stored",
                "stored / gzip",
                "peak RSS",
                "client CPU",
                "load",
            ],
            rows,
        )
    )
    pgr = next((a for a in res.restores if a.name.startswith("pg_restore -j2")), None)
    rows = [
        [
            a.name,
            secs(a.seconds),
            fx(ratio(a.seconds, pgr.seconds if pgr else None)),
            "-" if a.peak_rss_bytes is None else mb(a.peak_rss_bytes),
            secs(a.cpu_seconds),
            load(a.load),
        ]
        for a in res.restores
    ]
    sections.append(
        (
            "Restore",
            ["tool", "time", "time / pg_restore -j2", "peak RSS", "client CPU", "load"],
            rows,
        )
    )
    if res.repeat:
        r = res.repeat
        rows = [
            ["pg_dump -Fc -Z0 > file", secs(r["raw_seconds"]), "1.00x", mb(r["raw_bytes"]), ""],
            [
                "strongroom backup (repeat)",
                secs(r["strongroom_seconds"]),
                fx(ratio(r["strongroom_seconds"], r["raw_seconds"])),
                mb(r["stored_new_bytes"]) + " new",
                f"new data {r['new_plain_bytes'] / MB:,.1f} MB = "
                f"{100 * r['new_plain_bytes'] / max(r['raw_bytes'], 1):.2f} % of raw",
            ],
        ]
        sections.append(
            (
                "Repeat backup after one day of churn",
                ["tool", "time", "time / raw", "stored", "note"],
                rows,
            )
        )
    sections.extend(unchanged_section(res))
    if res.days_summary:
        s = res.days_summary
        rows = [
            [
                f"{s['days']} x pg_dump | gzip",
                mb(s["gzip_total_bytes"]),
                fx(ratio(s["gzip_total_bytes"], s["full_gzip_bytes"])),
            ],
            [
                f"strongroom repository after {s['days']} backups",
                mb(s["strongroom_total_bytes"]),
                fx(ratio(s["strongroom_total_bytes"], s["full_gzip_bytes"])),
            ],
            [
                "strongroom / gzip total",
                fx(ratio(s["strongroom_total_bytes"], s["gzip_total_bytes"]), 3),
                "",
            ],
        ]
        sections.append(
            (
                f"{s['days']} simulated days (database at --scale {s['scale']:g}, "
                f"{s['database_bytes'] / MB:,.0f} MB)",
                ["what", "stored", "/ one full gzip dump"],
                rows,
            )
        )
    sections.extend(objects_section(res))
    sections.extend(s3_sections(res))
    sections.extend(memory_sections(res))
    if res.checksums:
        sections.append(
            ("Cost of the table checksums", checksum_cost.HEADER, checksum_cost.rows(res.checksums))
        )
    sections.append(targets_section(res))
    return sections


def unchanged_section(res: Results) -> list[Section]:
    u = res.unchanged
    if not u:
        return []
    rows = [
        ["raw dump (pg_dump -Fc -Z0)", f"{u['raw_bytes']:,} B", ""],
        [
            "first backup: new stored",
            f"{u['first_stored_new_bytes']:,} B",
            pct(100 * u["first_stored_new_bytes"] / max(u["raw_bytes"], 1)),
        ],
        [
            "second backup: new stored",
            f"{u['stored_new_bytes']:,} B",
            pct(100 * u["stored_new_bytes"] / max(u["raw_bytes"], 1)),
        ],
        [
            "second backup: new data (plaintext)",
            f"{u['new_plain_bytes']:,} B",
            f"{u['new_chunks']} of {u['chunks']} chunks",
        ],
        [
            "second backup: repository growth",
            f"{u['repository_growth_bytes']:,} B",
            f"{u['new_files']} new files (manifest, pack, index, run log)",
        ],
    ]
    title = (
        f"Second backup of an unchanged small database ({u['raw_bytes'] / 2**20:,.2f} MiB raw "
        f"dump, {u['database_bytes'] / 2**20:,.1f} MiB pg_database_size, scale {u['scale']:g}, "
        "same server)"
    )
    return [(title, ["what", "bytes", "/ raw dump"], rows)]


def objects_section(res: Results) -> list[Section]:
    rows = []
    for key, label in (("first_backup", "first backup"), ("days", "daily simulation")):
        o = res.objects.get(key)
        if not o:
            continue
        if key == "days":
            label = f"{o['backups']} daily backups (repository at the end)"
        rows.append(
            [
                label,
                f"{o['backed_up_bytes'] / GB:,.3f}",
                f"{o['objects']:,} ({o['packs']:,} + {o['index_objects']:,})",
                count(o["objects_per_gb"]),
                count(o["chunks_per_gb"]),
                f"{o['repository_files']:,}",
            ]
        )
    for run in res.s3.get("backups", []):
        if run["default"]:
            rows.append(
                [
                    f"S3 first backup ({run['upload_workers']} upload threads)",
                    f"{run['raw_bytes'] / GB:,.3f}",
                    f"{run['objects']:,} (every key)",
                    count(run["objects_per_gb"]),
                    "",
                    "",
                ]
            )
    if not rows:
        return []
    header = [
        "repository",
        "GB backed up",
        "objects (packs + index)",
        "objects / GB",
        "chunks / GB",
        "files in folder",
    ]
    return [("Objects per GB backed up", header, rows)]


def s3_sections(res: Results) -> list[Section]:
    s3 = res.s3
    if not s3.get("backups"):
        return []
    local = next((a for a in res.backups if a.name == "strongroom backup (first)"), None)
    rows = []
    for run in s3["backups"]:
        r, per = run["requests"], run["requests_per_gb"]
        mark = " (default)" if run["default"] else ""
        rows.append(
            [
                f"backup, {run['upload_workers']} upload threads{mark}",
                secs(run["seconds"]),
                fx(ratio(run["seconds"], local.seconds if local else None)),
                *(f"{r.get(k, 0):,}" for k in ("PUT", "GET", "HEAD", "LIST")),
                f"{r.get('total', 0):,}",
                count(per.get("total")),
                f"{run['objects']:,}",
                count(run["objects_per_gb"]),
                mb(run["peak_rss_bytes"]),
            ]
        )
    rs = s3.get("restore")
    if rs:
        r, per = rs["requests"], rs["requests_per_gb"]
        rows.append(
            [
                "restore (verified)",
                secs(rs["seconds"]),
                "",
                *(f"{r.get(k, 0):,}" for k in ("PUT", "GET", "HEAD", "LIST")),
                f"{r.get('total', 0):,}",
                count(per.get("total")),
                "",
                "",
                mb(rs["peak_rss_bytes"]),
            ]
        )
    raw = s3["backups"][0]["raw_bytes"]
    title = (
        f"S3 (moto on 127.0.0.1 behind a counting proxy): the benchmark database after its day "
        f"of churn, {mb(raw)} raw"
    )
    header = [
        "run",
        "time",
        "/ local backup",
        "PUT",
        "GET",
        "HEAD",
        "LIST",
        "requests",
        "requests / GB",
        "objects",
        "objects / GB",
        "peak RSS",
    ]
    return [(title, header, rows)]


def memory_sections(res: Results) -> list[Section]:
    m = res.memory
    if not m.get("points"):
        return []
    rows = [
        [
            p["label"],
            mb(p["database_bytes"]),
            mb(p["raw_bytes"]),
            mb(p["backup_rss_bytes"] or None),
            mb(p["restore_rss_bytes"] or None),
            "measured",
        ]
        for p in m["points"]
    ]
    fits = [m.get("backup_fit"), m.get("restore_fit")]
    at_size = [p for p in m["points"] if int(p["raw_bytes"]) >= 0.95 * 10 * GB]
    if at_size:  # --big-gb 10 or more: the 10 GB row is a measurement
        rows.append(
            [
                "10 GB raw dump",
                "",
                mb(10 * GB),
                mb(at_size[0]["backup_rss_bytes"] or None),
                mb(at_size[0]["restore_rss_bytes"] or None),
                f"measured: the {at_size[0]['label']} database above",
            ]
        )
    elif not any(fits):
        rows.append(
            [
                "10 GB raw dump",
                "",
                mb(10 * GB),
                "-",
                "-",
                m.get("no_fit", "not extrapolated"),
            ]
        )
    else:
        rows.append(
            [
                "10 GB raw dump",
                "",
                mb(10 * GB),
                *(mb(f["at_10_gb_bytes"]) if f else "-" for f in fits),
                "extrapolated: straight line through the two text-value sizes ("
                + ", ".join(
                    f"{what} {f['bytes_per_raw_gb'] / MB:+.1f} MB per GB"
                    for what, f in zip(("backup", "restore"), fits, strict=True)
                    if f
                )
                + ")",
            ]
        )
    out: list[Section] = [
        (
            "Memory at size (peak RSS of the strongroom process)",
            ["database", "size", "raw dump", "backup", "restore", "how"],
            rows,
        )
    ]
    c = m.get("index_cache")
    if c:
        out.append(
            (
                "Local index cache (SQLite) per chunk",
                ["what", "value", ""],
                [
                    ["chunks in the cache", f"{c['chunk_rows'] + c['loose_rows']:,}", "measured"],
                    ["cache file(s) on disk", mb(c["disk_bytes"]), "measured"],
                    ["bytes per chunk", f"{c['bytes_per_chunk']:.1f} B", "measured"],
                    [
                        "average chunk (plaintext)",
                        f"{(c['average_chunk_bytes'] or 0) / 1024:,.1f} KiB",
                        "measured",
                    ],
                    [
                        "1 TB of distinct data: chunks",
                        count(c["chunks_per_tb"]),
                        "extrapolated",
                    ],
                    [
                        "1 TB of distinct data: cache on disk",
                        mb(c["cache_bytes_per_tb"]),
                        "extrapolated (memory: SQLite page cache capped at 16 MiB)",
                    ],
                ],
            )
        )
    return out


def targets_section(res: Results) -> Section:
    rows = [
        [
            t.description,
            "issue 19" if t.issue else "bench",
            t.measured,
            t.baseline,
            target_value(t),
            target_limit(t),
            verdict(t),
        ]
        for t in res.targets
    ]
    return (
        "Targets (reported, not asserted)",
        ["target", "row of", "strongroom", "baseline", "value", "limit", ""],
        rows,
    )
