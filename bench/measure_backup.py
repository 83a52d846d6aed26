"""The backups: the first backup against the pg_dump baselines (time, stored size, peak
RSS, objects per GB), the repeat backup after one day of churn, and the second backup of an
unchanged small database."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import checksum_cost
from harness import DB, STRONGROOM, Bench
from proc_measure import Measured, q, shell
from repo_stats import (
    file_count,
    latest_backup_stats,
    objects_per_gb,
    stats_json,
    tree_bytes,
)
from report_format import mb, secs
from results_model import Results, artifact

#: The issue's "unchanged 1.8 MiB database": datagen at this scale dumps about 1.8 MiB.
SMALL_SCALE = 0.0041
SMALL_DB = "app_small"


def backups(bench: Bench, res: Results, repo: Path, key: Path) -> None:
    url = bench.server.url(DB)
    raw = bench.files / "app.Z0.dump"
    gz = bench.files / "app.sql.gz"
    z9 = bench.files / "app.Z9.dump"

    def raw_dump() -> Measured:
        return bench.run(
            "pg_dump -Fc -Z0", shell(f"{q(bench.pg_dump)} -Fc -Z0 -d {q(url)} > {q(raw)}")
        )

    def first_backup(checksums: bool = True) -> Measured:
        shutil.rmtree(repo, ignore_errors=True)
        key.unlink(missing_ok=True)
        bench.run("strongroom init", bench.sr("init", "--repo", repo, "--key-file", key))
        return bench.run(
            "strongroom backup" + ("" if checksums else " (no checksums)"),
            bench.sr("backup", url, "--repo", repo, "--key-file", key),
            rss=True,
            env=None if checksums else {checksum_cost.CHECKSUMS_ENV: "0"},
        )

    raw_runs, no_sums_runs, sr_runs = bench.alternate(
        "backup",
        [
            ("pg_dump -Fc -Z0 > file (raw)", raw_dump),
            ("strongroom backup (no checksums)", lambda: first_backup(checksums=False)),
            ("strongroom backup (first)", first_backup),
        ],
    )
    res.backups.append(artifact("pg_dump -Fc -Z0 > file (raw)", raw_runs, raw.stat().st_size))
    for label, script, out in (
        ("pg_dump | gzip", f"{q(bench.pg_dump)} -d {q(url)} | gzip > {q(gz)}", gz),
        ("pg_dump -Fc -Z9", f"{q(bench.pg_dump)} -Fc -Z9 -d {q(url)} > {q(z9)}", z9),
    ):
        bench.say(f"backup: {label}")
        m = bench.run(label, shell(script))
        res.backups.append(artifact(label, [m], out.stat().st_size))
        bench.say(f"  {secs(m.seconds)}, {mb(out.stat().st_size)}")
    z9.unlink()
    res.backups.append(
        artifact(
            "strongroom backup (no checksums)",
            no_sums_runs,
            note=f"{checksum_cost.CHECKSUMS_ENV}=0: row counts only",
        )
    )
    res.backups.append(
        artifact(
            "strongroom backup (first)",
            sr_runs,
            tree_bytes(repo),
            note="local repository, zstd + age",
        )
    )
    bench.say(f"  strongroom repository: {mb(tree_bytes(repo))}")
    res.objects["first_backup"] = first_backup_objects(bench, repo, key)
    bench.say("checksum cost: the scans alone")
    res.checksums = checksum_cost.measure(
        url, pg_dump=bench.pg_dump, env=bench.env, repeat=bench.args.repeat, say=bench.say
    )
    res.checksums["backup_seconds"] = res.backups[-1].seconds
    res.checksums["backup_no_checksums_seconds"] = res.backups[-2].seconds
    res.dataset["raw_dump_bytes"] = raw.stat().st_size
    res.dataset["gzip_ratio"] = round(raw.stat().st_size / gz.stat().st_size, 3)


def first_backup_objects(bench: Bench, repo: Path, key: Path) -> dict[str, Any]:
    """Objects the first backup wrote (``strongroom stats --json``), per GB backed up, and
    every file of the repository folder (manifest, config, keys too)."""
    stats = stats_json(STRONGROOM, repo, key, bench.env)
    found = objects_per_gb(stats, int(stats["total"]["raw_bytes"]))
    found["repository_files"] = file_count(repo)
    bench.say(
        f"  objects: {found['objects']} ({found['packs']} packs, {found['index_objects']} "
        f"index), {found['objects_per_gb']} per GB backed up"
    )
    return found


def repeat(bench: Bench, res: Results, repo: Path, key: Path) -> None:
    url = bench.server.url(DB)
    raw = bench.files / "app.Z0.dump"
    snapshot = bench.work / "repo-after-first"
    shutil.copytree(repo, snapshot)
    first_stored = tree_bytes(repo)
    bench.say("churn: day 1 on the main database")
    churn = bench.churn(DB, 1)
    bench.say(
        f"  {churn['inserted']:,} rows inserted, {churn['updated']:,} updated, "
        f"{churn['deleted']:,} deleted (and their cascades)"
    )

    def raw_dump() -> Measured:
        return bench.run(
            "pg_dump -Fc -Z0 (repeat)",
            shell(f"{q(bench.pg_dump)} -Fc -Z0 -d {q(url)} > {q(raw)}"),
        )

    def repeat_backup() -> Measured:
        shutil.rmtree(repo)
        shutil.copytree(snapshot, repo)  # every run starts from the first backup alone
        return bench.run(
            "strongroom backup (repeat)",
            bench.sr("backup", url, "--repo", repo, "--key-file", key),
            rss=True,
        )

    raw_runs, sr_runs = bench.pair(
        "repeat",
        ("pg_dump -Fc -Z0 > file (raw)", raw_dump),
        ("strongroom backup", repeat_backup),
    )
    shutil.rmtree(snapshot)
    stats = latest_backup_stats(repo)
    res.repeat = {
        "churn": churn,
        "raw_seconds": round(min(m.seconds for m in raw_runs), 2),
        "raw_samples": [round(m.seconds, 2) for m in raw_runs],
        "raw_cpu_seconds": round(min(raw_runs, key=lambda m: m.seconds).cpu_seconds, 2),
        "raw_bytes": raw.stat().st_size,
        "strongroom_seconds": round(min(m.seconds for m in sr_runs), 2),
        "strongroom_samples": [round(m.seconds, 2) for m in sr_runs],
        "strongroom_cpu_seconds": round(min(sr_runs, key=lambda m: m.seconds).cpu_seconds, 2),
        "strongroom_peak_rss_bytes": max(m.hwm_kib for m in sr_runs) * 1024,
        "repository_growth_bytes": tree_bytes(repo) - first_stored,
        "first_stored_bytes": first_stored,
        **stats,
    }
    bench.say(
        f"  new data {mb(stats['new_plain_bytes'])} "
        f"({100 * stats['new_plain_bytes'] / max(stats['raw_bytes'], 1):.1f} % of raw), "
        f"stored {mb(stats['stored_new_bytes'])}"
    )
    raw.unlink()


def unchanged_small(bench: Bench, res: Results) -> None:
    """Issue 19's small-database row: a ~1.8 MiB database in the same server, backed up
    twice with nothing changed in between; the second backup's new stored bytes."""
    bench.say(f"unchanged small database (scale {SMALL_SCALE:g}): two backups")
    dataset = bench.generate(SMALL_DB, SMALL_SCALE)
    repo = bench.work / "repo-small"
    key = bench.work / "small.key"
    url = bench.server.url(SMALL_DB)
    bench.run("strongroom init (small)", bench.sr("init", "--repo", repo, "--key-file", key))
    bench.run(
        "strongroom backup (small, 1)", bench.sr("backup", url, "--repo", repo, "--key-file", key)
    )
    first = latest_backup_stats(repo)
    before_bytes, before_files = tree_bytes(repo), file_count(repo)
    bench.run(
        "strongroom backup (small, 2)", bench.sr("backup", url, "--repo", repo, "--key-file", key)
    )
    second = latest_backup_stats(repo)
    res.unchanged = {
        "scale": SMALL_SCALE,
        "database_bytes": dataset["database_bytes"],
        "raw_bytes": second["raw_bytes"],
        "first_raw_bytes": first["raw_bytes"],
        "first_stored_new_bytes": first["stored_new_bytes"],
        "stored_new_bytes": second["stored_new_bytes"],
        "new_plain_bytes": second["new_plain_bytes"],
        "chunks": second["chunks"],
        "new_chunks": second["new_chunks"],
        "repository_growth_bytes": tree_bytes(repo) - before_bytes,
        "new_files": file_count(repo) - before_files,
    }
    bench.say(
        f"  raw dump {second['raw_bytes']:,} B; second backup: {second['new_chunks']} new "
        f"chunks, {second['stored_new_bytes']:,} B new stored "
        f"({100 * second['stored_new_bytes'] / max(second['raw_bytes'], 1):.2f} %), repository "
        f"+{res.unchanged['repository_growth_bytes']:,} B in {res.unchanged['new_files']} files"
    )
    bench.server.drop_database(SMALL_DB)
    shutil.rmtree(repo, ignore_errors=True)
