"""The run's report: printed to stdout and written as Markdown (``latest.md``)."""

from __future__ import annotations

from pathlib import Path

import checksum_cost
from report_format import mb, md_table, secs, text_table
from report_tables import report_sections
from results_model import MB, Results


def dataset_lines(res: Results) -> list[str]:
    d = res.dataset
    rows = ", ".join(f"{k} {v:,}" for k, v in d["rows"].items())
    return [
        f"database: {d['database_bytes'] / MB:,.0f} MB (pg_database_size), scale "
        f"{res.config['scale']:g}, seed {res.config['seed']}, generated in "
        f"{d['generate_seconds']:.0f} s",
        f"rows: {rows}",
        f"raw dump (pg_dump -Fc -Z0): {d['raw_dump_bytes'] / MB:,.1f} MB; gzip ratio of the "
        f"data (raw / pg_dump|gzip): {d['gzip_ratio']:.2f}x (real app data: typically 3-5x)",
    ]


def environment_line(res: Results) -> str:
    e = res.environment
    return (
        f"{e['cpus']} CPUs ({e['cpu']}), {e['memory_bytes'] / 2**30:.0f} GiB RAM, "
        f"PostgreSQL {e['postgresql']}, Python {e['python']}, strongroom {e['strongroom']} "
        f"({e['git_commit']}), {e['date']}, load average {e['load_at_start']:.1f} at the start"
        + (f", {e['load_at_end']:.1f} at the end" if "load_at_end" in e else "")
    )


NOTES = [
    "Times: the raw dump and strongroom backup, pg_restore -j2 and strongroom restore, and "
    "the repeat pair run --repeat times alternately and the fastest run of each is shown "
    "(all runs are in latest.json); the other baselines run once. Times include process "
    "start-up. Every tool reads the same database on the same local server (fsync=off, data "
    "in the page cache) and writes to the same local disk.",
    "Peak RSS is VmHWM of the strongroom Python process itself, polled every 20 ms, the "
    "highest of its runs (pg_dump / pg_restore run as its children and are not included).",
    "strongroom's stored size is the whole repository folder (packs, index objects, "
    "manifests, config). Every strongroom command keeps its local index cache in the scratch "
    "folder (STRONGROOM_CACHE_DIR).",
    "client CPU: user + system seconds of the measured command and its children (strongroom "
    "includes its pg_dump / pg_restore; the PostgreSQL server's CPU is not counted). load: the "
    "machine's 1-minute load average when the run started (other work on the machine slows "
    "every tool; CPU seconds are less sensitive to it than wall time).",
    "One day of churn: about 1 % new rows in every growing table; updates of 0.5 % of each "
    "table's row count, picked among its newest 10 % of rows; a few deletes (1 in 20,000 "
    "notes and workouts, and one user account a day, whose rows cascade).",
    "Repeat-backup new bytes: plaintext bytes of chunks not in any earlier backup, as a "
    "share of the raw dump (the number `strongroom backup` prints as 'new data').",
    "The daily simulation runs `pg_dump | gzip` and `strongroom backup` at the same time "
    "each day (only sizes are compared there).",
    "Second backup of an unchanged small database: a database of about 1.8 MiB of dump "
    "generated in the same server (datagen at a fixed scale), backed up twice into a fresh "
    "repository with nothing changed in between; 'new stored' is the manifest's "
    "stored_new_bytes (compressed, encrypted bytes of chunks no earlier backup had), the "
    "repository growth also counts the manifest, index object and run record.",
    "Objects per GB backed up: `strongroom stats --json` objects (packs + index objects + "
    "version 1 loose chunks) over the raw dump bytes of every backup in the repository "
    "(for the daily simulation, the sum of all its backups); files in folder counts every "
    "file of the repository folder (manifests, config, run records too).",
    "S3: moto's server (in the benchmark's process) on 127.0.0.1 with a counting proxy "
    "(strongroom_servers.s3proxy, no fault set) in front; requests are counted at the proxy "
    "by method (LIST = a GET of the bucket). Each number of pack upload threads backs up the "
    "same database into a fresh prefix, run through bench/sr_workers.py, which sets "
    "strongroom.repository.pack_session.UPLOAD_WORKERS (strongroom has no setting for it). moto "
    "and the proxy are Python on the same 2 cores: times show the request pattern and "
    "concurrency, not a real S3's latency or bandwidth.",
    "Memory at size: the peak RSS (VmHWM) of the strongroom process at every database size of "
    "the run; the large databases are one table of 1 MiB text values (distinct sha512 hex "
    "digests, about 2x compressible), at --big-gb and a quarter of it, cheap to generate but "
    "not app-shaped. The 10 GB row is a measurement only when --big-gb was 10 or more (it "
    "says so); otherwise a straight line through the two text-value sizes (memory that "
    "levels off makes it pessimistic; growth that speeds up, optimistic). The 1 TB cache "
    "size is never measured: bytes per chunk measured x chunks per TB "
    "at the measured average chunk.",
    "Checksum cost: " + checksum_cost.NOTE,
]


def notes(res: Results) -> list[str]:
    """The fixed notes, plus what this run's options changed."""
    extra = []
    cfg = res.config
    if res.days_summary and cfg["days_scale"] != cfg["scale"]:
        extra.append(
            f"The {cfg['days']}-day simulation ran on a separate, smaller database "
            f"(--days-scale {cfg['days_scale']:g}) so that the whole run fits in 10 minutes on "
            "2 cores; a smaller database has fewer chunks, so the same churn dirties a larger "
            "share of them (run with --days-scale equal to --scale for the full size)."
        )
    return NOTES + extra


def print_report(res: Results) -> None:
    print()
    print("=" * 78)
    print("strongroom benchmark — " + environment_line(res))
    for line in dataset_lines(res):
        print(line)
    for title, header, rows in report_sections(res):
        print()
        print(title)
        for line in text_table(header, rows):
            print("  " + line)
    print()
    for note in notes(res):
        print("* " + note)


def write_markdown(res: Results, path: Path, chart: Path | None) -> None:
    lines = ["# strongroom benchmark: latest run", ""]
    lines.append(environment_line(res) + ".")
    lines.append("")
    lines.append(
        f"Command: `{res.config['command']}` (total {res.timeline.get('total', 0):.0f} s)."
    )
    lines.append("")
    lines.extend(f"- {line}" for line in dataset_lines(res))
    for title, header, rows in report_sections(res):
        lines += ["", f"## {title}", ""]
        lines.extend(md_table(header, rows))
    if chart is not None:
        lines += ["", f"![cumulative stored bytes per day]({chart.name})"]
    if res.days:
        lines += ["", "<details><summary>Per day</summary>", ""]
        rows = [
            [
                str(d.day),
                mb(d.gzip_bytes),
                mb(d.gzip_cumulative),
                mb(d.strongroom_new_stored),
                mb(d.strongroom_repo_bytes),
                f"{100 * d.new_plain_bytes / max(d.raw_bytes, 1):.1f} %",
                secs(d.backup_seconds),
            ]
            for d in res.days
        ]
        lines.extend(
            md_table(
                [
                    "day",
                    "gzip dump",
                    "gzip cumulative",
                    "strongroom new",
                    "strongroom repository",
                    "new data",
                    "backup time*",
                ],
                rows,
            )
        )
        lines += ["", "\\* concurrent with that day's `pg_dump | gzip`.", "", "</details>"]
    lines += ["", "## Notes", ""]
    lines.extend(f"- {n}" for n in notes(res))
    path.write_text("\n".join(lines) + "\n")
