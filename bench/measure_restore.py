"""The restores: ``gunzip | psql``, ``pg_restore -j2`` from the local -Z0 file and
``strongroom restore`` (verified), the last two alternately, best of ``--repeat``."""

from __future__ import annotations

from pathlib import Path

from harness import Bench
from proc_measure import Measured, q, shell
from report_format import secs
from results_model import Results, artifact


def restores(bench: Bench, res: Results, repo: Path, key: Path) -> None:
    raw = bench.files / "app.Z0.dump"
    gz = bench.files / "app.sql.gz"

    def pg_restore() -> Measured:
        name = "restored_pgr"
        bench.server.drop_database(name)
        bench.server.create_database(name)
        argv = [str(bench.pg_restore), "-j", "2", "--no-owner", "--exit-on-error"]
        m = bench.run("pg_restore -j2", [*argv, "-d", bench.server.url(name), str(raw)])
        bench.server.drop_database(name)
        return m

    def sr_restore() -> Measured:
        name = "restored_sr"
        bench.server.drop_database(name)
        m = bench.run(
            "strongroom restore",
            bench.sr(
                "restore",
                "latest",
                "--to",
                bench.server.url(name),
                "--repo",
                repo,
                "--key-file",
                key,
                "--yes",
            ),
            rss=True,
        )
        bench.server.drop_database(name)
        return m

    name = "restored_gzip"
    bench.server.create_database(name)
    bench.say("restore: gunzip | psql")
    m = bench.run(
        "gunzip | psql",
        shell(
            f"gunzip -c {q(gz)} | {q(bench.psql)} -X -q -v ON_ERROR_STOP=1 "
            f"-d {q(bench.server.url(name))} > /dev/null"
        ),
    )
    res.restores.append(artifact("gunzip | psql", [m]))
    bench.say(f"  {secs(m.seconds)}")
    bench.server.drop_database(name)
    gz.unlink()
    pgr_runs, sr_runs = bench.pair(
        "restore",
        ("pg_restore -j2 (local -Z0 file)", pg_restore),
        ("strongroom restore", sr_restore),
    )
    res.restores.append(artifact("pg_restore -j2 (local -Z0 file)", pgr_runs))
    res.restores.append(
        artifact("strongroom restore", sr_runs, note="includes its row-count verification")
    )
