"""Tables, targets and notes of the PITR benchmark (bench/pitr_bench.py), for stdout and for
bench/results/pitr.md alike. Every function takes the run's result document (the content
of pitr.json) and never measures anything."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from run import fx, mb, md_table, ratio, secs, text_table  # noqa: E402

Section = tuple[str, list[str], list[list[str]]]

# The targets: key -> (description, limit, unit, at_least).
TARGETS: dict[str, tuple[str, float, str, bool]] = {
    "wal_push_p95": ("wal-push p95 per 16 MB segment during the bulk load", 100.0, "ms", False),
    "segments_per_second": (
        "segments archived per second, sustained during the bulk load",
        3.0,
        "segments/s",
        True,
    ),
}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its value and verdict (``pass``: None when not measured)."""
    load = res.get("wal_push", {}).get("load", {})
    values = {
        "wal_push_p95": load.get("p95_ms"),
        "segments_per_second": load.get("segments_per_second"),
    }
    found = []
    for key, (description, limit, unit, at_least) in TARGETS.items():
        value = values[key]
        passed = None if value is None else (value >= limit if at_least else value <= limit)
        found.append(
            {
                "key": key,
                "description": description,
                "value": value,
                "limit": limit,
                "unit": unit,
                "at_least": at_least,
                "pass": passed,
            }
        )
    return found


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}/s"


def _push_row(label: str, stats: dict[str, Any], generated: float | None) -> list[str]:
    return [
        label,
        str(stats.get("segments", 0)),
        ms(stats.get("p50_ms")),
        ms(stats.get("p95_ms")),
        ms(stats.get("max_ms")),
        rate(stats.get("segments_per_second")),
        rate(generated),
        str(stats.get("failed_calls", 0)),
    ]


def sections(res: dict[str, Any]) -> list[Section]:
    """(title, header, rows) of every table."""
    out: list[Section] = []
    push = res["wal_push"]
    load = push["load"]
    gen_seconds = res["dataset"]["generate_seconds"]
    gen_segments = push["generate"].get("segments", 0)
    out.append(
        (
            "wal-push: the archiver's real calls (wall time of the whole process)",
            ["phase", "segments", "p50", "p95", "max", "archived", "WAL written", "failed"],
            [
                _push_row(
                    "bulk load (server-side table copies)",
                    load,
                    load["wal_generated_segments_per_second"],
                ),
                _push_row(
                    "data generation (datagen, slower than the archiver)",
                    push["generate"],
                    gen_segments / gen_seconds if gen_seconds else None,
                ),
            ],
        )
    )
    end = push["archiver_end"]
    out.append(
        (
            "Archiver during and after the bulk load",
            ["what", "value"],
            [
                [
                    "backlog (.ready files): max / median during the load",
                    f"{load['backlog_max_files']} / {load['backlog_median_files']}",
                ],
                [
                    "archive lag when the load ended",
                    f"{load['lag_at_load_end_files']} files, {mb(load['lag_at_load_end_bytes'])}",
                ],
                ["time to archive that lag", secs(load["drain_seconds"])],
                [
                    "segments the wrapper timed / pg_stat_archiver archived_count delta",
                    f"{load['segments_archived']} / {load['archived_count_delta']}",
                ],
                [
                    "pg_stat_archiver failed_count: during the load / at the end",
                    f"{load['failed_count_delta']} / {end['failed_count']}",
                ],
                [
                    "archive lag at the end of the run",
                    f"{end['ready_files']} files waiting, last archived {end['last_archived_wal']}",
                ],
            ],
        )
    )
    b = res["base_backups"]
    pgb, first, second, pgb2 = (
        b["pg_basebackup"],
        b["first"],
        b["second"],
        b["pg_basebackup_after_churn"],
    )
    new_share = ratio(second["stored_bytes"], first["stored_bytes"]) or 0
    second_note = (
        f"new stored / first's: {100 * new_share:.1f} %; new data "
        f"{100 * (ratio(second['new_plain_bytes'], second['raw_bytes']) or 0):.1f}"
        " % of raw"
    )
    out.append(
        (
            "Base backups (to local disk)",
            ["tool", "time", "time / pg_basebackup", "stored", "stored / tar", "note"],
            [
                [
                    "pg_basebackup -Ft -X fetch -D - > file",
                    secs(pgb["seconds"]),
                    "1.00x",
                    mb(pgb["bytes"]),
                    "1.00x",
                    "uncompressed tar",
                ],
                [
                    "strongroom backup --physical (first)",
                    secs(first["seconds"]),
                    fx(ratio(first["seconds"], pgb["seconds"])),
                    mb(first["stored_bytes"]),
                    fx(ratio(first["stored_bytes"], pgb["bytes"])),
                    f"raw {mb(first['raw_bytes'])}, zstd + age",
                ],
                [
                    "after one day of churn: pg_basebackup",
                    secs(pgb2["seconds"]),
                    "1.00x",
                    mb(pgb2["bytes"]),
                    "1.00x",
                    "",
                ],
                [
                    "after one day of churn: strongroom (second)",
                    secs(second["seconds"]),
                    fx(ratio(second["seconds"], pgb2["seconds"])),
                    mb(second["stored_bytes"]) + " new",
                    fx(ratio(second["stored_bytes"], pgb2["bytes"])),
                    second_note,
                ],
            ],
        )
    )
    r = res["rto"]
    base = r["tar_start_seconds"]
    pitr_note = (
        f"base backup + {mb(r['wal_replayed_bytes'])} of WAL in {r['wal_segments_replayed']} "
        f"segments ({r['churn_days']} days of churn in {r['window_seconds']:.0f} s: "
        f"{mb(r['wal_churn_bytes'])}) replayed, {r['replay_mb_per_second'] or '-'} MB/s; "
        f"markers exact: {'yes' if r['markers_exact'] else 'NO'}"
    )
    out.append(
        (
            "Restore: a running cluster (RTO)",
            ["what", "time", "/ tar -x + start", "note"],
            [
                [
                    "pg_basebackup tar: tar -x",
                    secs(r["tar_x_seconds"]),
                    fx(ratio(r["tar_x_seconds"], base)),
                    "files only",
                ],
                [
                    "pg_basebackup tar: tar -x + pg_ctl start",
                    secs(base),
                    "1.00x",
                    "the backup's own WAL (-X fetch) only",
                ],
                [
                    "strongroom: base backup laid down, no WAL replay",
                    secs(r["laydown_seconds"]),
                    fx(ratio(r["laydown_seconds"], base)),
                    f"{fx(ratio(r['laydown_seconds'], r['tar_x_seconds']))} tar -x; not started",
                ],
                [
                    "strongroom restore --to-time T --start",
                    secs(r["pitr_seconds"]),
                    fx(ratio(r["pitr_seconds"], base)),
                    pitr_note,
                ],
            ],
        )
    )
    out.append(
        (
            "Targets (reported, not asserted)",
            ["target", "value", "limit", ""],
            [
                [
                    t["description"],
                    "-" if t["value"] is None else f"{t['value']:g} {t['unit']}",
                    f"{'>=' if t['at_least'] else '<='} {t['limit']:g} {t['unit']}",
                    {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]],
                ]
                for t in res["targets"]
            ],
        )
    )
    return out


def notes(res: dict[str, Any]) -> list[str]:
    load = res["wal_push"]["load"]
    found = [
        "wal-push times: archive_command is a bash wrapper that reads $EPOCHREALTIME before and "
        "after `strongroom wal-push --config … %p` (run by the server as its OS user): the whole "
        "process, interpreter start-up included, which is what PostgreSQL waits for. Percentiles "
        "are over the successful calls for 16 MB segments (not .history or .backup files); the "
        "segment the final pg_switch_wal() closed (mostly empty) is left out.",
        "Segments archived per second: successful segment calls / (last call's end - first "
        "call's start) during the bulk load and the drain after it. 'WAL written': the load's "
        "WAL in segments per second; when it is above 'archived', the archiver had a backlog "
        "all along and the rate is the archiver's own.",
        "The bulk load copies the generated app tables server-side (INSERT … SELECT into tables "
        "without indexes) until --load-segments segments are written: real app data, written "
        "faster than one archiver can take it on 2 cores.",
        "Base backups: the same cluster, right after each other (the baseline first), each "
        "with --checkpoint=fast; pg_basebackup's tar holds the WAL of its own span (-X fetch: "
        "to stdout it cannot stream WAL), strongroom's takes it from the archive (-X none). "
        "strongroom's stored bytes are the repository's growth outside logs/ (the WAL "
        "archive). The second pair follows one simulated day of churn (datagen_churn.churn_day).",
        "RTO: the pg_basebackup tar is of the state strongroom's second base backup took "
        "right after it; "
        "'tar -x + pg_ctl start' is what recovers from it (crash recovery with its own WAL, "
        "archive_mode off). strongroom's restore --to-time chooses that base backup, lays it "
        "down, fetches the WAL with wal-fetch and replays it to T (a marker commit after the "
        "last churn); WAL replayed: from the base backup's start to T. Each restore runs "
        "--repeat times, alternately; the fastest is shown.",
        "The server runs as the test harness starts it (fsync=off, full_page_writes=off, "
        "synchronous_commit=off: less WAL for updates than a production server writes); "
        "restored clusters start with their postgresql.conf (fsync on).",
    ]
    if load.get("wal_generated_segments_per_second", 0) < (load.get("segments_per_second") or 0):
        found.append(
            "This run's load wrote WAL slower than the archiver took it: the segments/s "
            "figure is the load's rate, not the archiver's limit."
        )
    return found


def environment_line(res: dict[str, Any]) -> str:
    e = res["environment"]
    return (
        f"{e['cpus']} CPUs ({e['cpu']}), {e['memory_bytes'] / 2**30:.0f} GiB RAM, PostgreSQL "
        f"{e['postgresql']}, Python {e['python']}, strongroom {e['strongroom']} "
        f"({e['git_commit']}), {e['date']}, load average {e['load_at_start']:.1f} at the start"
        + (f", {e['load_at_end']:.1f} at the end" if "load_at_end" in e else "")
    )


def dataset_line(res: dict[str, Any]) -> str:
    d, c = res["dataset"], res["config"]
    return (
        f"database: {d['database_bytes'] / 1e6:,.0f} MB (pg_database_size), --scale "
        f"{c['scale']:g}, seed {c['seed']}; --load-segments {c['load_segments']}, --replay-minutes "
        f"{c['replay_minutes']:g}, --repeat {c['repeat']}"
    )


def text(res: dict[str, Any]) -> str:
    lines = [
        "",
        "=" * 78,
        "strongroom PITR benchmark — " + environment_line(res),
        dataset_line(res),
    ]
    for title, header, rows in sections(res):
        lines += ["", title, *("  " + line for line in text_table(header, rows))]
    lines.append("")
    lines.extend("* " + n for n in notes(res))
    return "\n".join(lines)


def markdown(res: dict[str, Any]) -> str:
    total = res["timeline_seconds"].get("finish", 0)
    lines = [
        "# strongroom PITR benchmark: latest run",
        "",
        environment_line(res) + ".",
        "",
        f"Command: `{res['config']['command']}` (total {total:.0f} s).",
        "",
        "- " + dataset_line(res),
    ]
    for title, header, rows in sections(res):
        lines += ["", f"## {title}", "", *md_table(header, rows)]
    lines += ["", "## Notes", "", *("- " + n for n in notes(res))]
    return "\n".join(lines) + "\n"
