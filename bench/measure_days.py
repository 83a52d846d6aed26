"""The daily simulation: one day of churn and one backup a day (``pg_dump | gzip`` and
``strongroom backup`` at the same time); stored bytes per day, objects at the end."""

from __future__ import annotations

from harness import STRONGROOM, Bench
from proc_measure import q, shell
from repo_stats import (
    file_count,
    index_cache,
    latest_backup_stats,
    objects_per_gb,
    stats_json,
    tree_bytes,
)
from report_format import mb
from results_model import DayRecord, Results


def days(bench: Bench, res: Results, dbname: str, database_bytes: int, scale: float) -> None:
    repo = bench.work / "repo-days"
    key = bench.work / "days.key"
    url = bench.server.url(dbname)
    bench.run("strongroom init (days)", bench.sr("init", "--repo", repo, "--key-file", key))
    cumulative = 0
    for day in range(1, bench.args.days + 1):
        churn: dict[str, int] = {}
        if day > 1:
            churn = bench.churn(dbname, day - 1)
        gz = bench.files / f"day-{day:02d}.sql.gz"
        before = tree_bytes(repo)
        dump = bench.start(
            f"day {day}: pg_dump | gzip",
            shell(f"{q(bench.pg_dump)} -d {q(url)} | gzip > {q(gz)}"),
            log="days",
        )
        try:
            m = bench.run(
                f"day {day}: strongroom backup",
                bench.sr("backup", url, "--repo", repo, "--key-file", key),
                log="days",
                rss=True,
            )
        except BaseException:
            dump.kill()
            raise
        dump.wait()
        size = gz.stat().st_size
        gz.unlink()
        cumulative += size
        total = tree_bytes(repo)
        stats = latest_backup_stats(repo)
        res.days.append(
            DayRecord(
                day=day,
                gzip_bytes=size,
                gzip_cumulative=cumulative,
                strongroom_repo_bytes=total,
                strongroom_new_stored=total - before,
                raw_bytes=stats["raw_bytes"],
                new_plain_bytes=stats["new_plain_bytes"],
                backup_seconds=round(m.seconds, 2),
                backup_peak_rss_bytes=m.hwm_kib * 1024,
                churn=churn,
            )
        )
        bench.say(
            f"day {day:2d}: gzip {mb(size)} (total {mb(cumulative)}), strongroom +"
            f"{mb(total - before)} (total {mb(total)}), new data "
            f"{100 * stats['new_plain_bytes'] / max(stats['raw_bytes'], 1):.1f} %"
        )
    res.days_summary = {
        "days": bench.args.days,
        "scale": scale,
        "database_bytes": database_bytes,
        "full_gzip_bytes": res.days[0].gzip_bytes,
        "strongroom_first_bytes": res.days[0].strongroom_repo_bytes,
        "gzip_total_bytes": cumulative,
        "strongroom_total_bytes": res.days[-1].strongroom_repo_bytes,
    }
    stats = stats_json(STRONGROOM, repo, key, bench.env)
    found = objects_per_gb(stats, sum(d.raw_bytes for d in res.days))
    found["repository_files"] = file_count(repo)
    found["index_cache"] = index_cache(bench.cache_dir, repo)
    res.objects["days"] = found
    bench.say(
        f"  objects after {bench.args.days} days: {found['objects']} ({found['packs']} packs, "
        f"{found['index_objects']} index), {found['objects_per_gb']} per GB backed up"
    )
