"""S3 faults through a fault-injecting proxy in front of moto's S3 server.

Each trial copies the base S3 repository to its own prefix, starts its own
``FaultProxy`` (``strongroom_servers.s3proxy``) and points the command at it, with
``STRONGROOM_STORAGE_DEADLINE=5``. The fault is drawn at random: which requests (all, one
method, chunks, manifests, the config, locks, listings), how often (every time, or a rate)
and how many (once, twice, five times, without end). One command runs under the fault;
then the fault is lifted and the oracles run against moto directly.

A command that fails with exit 7 ("damaged") when the fault was transient (at most two
faulty answers, or one in five requests) while the stored data is intact is *unclear*:
the repository is not damaged, and retrying would have succeeded.
"""

from __future__ import annotations

from dataclasses import replace

from strongroom_servers.s3proxy import FaultProxy

from .procs import CliResult
from .trial import Kind, Trial
from .world import Repo

COMMANDS = (
    "backup",
    "list",
    "verify-all",
    "verify",
    "restore",
    "prune",
    "forget-prune",
    "check",
    "cat",
)
TARGETS = (None, None, "/chunks/", "/backups/", "/config", "/locks/", "list-type=2")


def _command(t: Trial, repo: Repo, choice: str) -> tuple[list[CliResult], str | None]:
    """Run ``choice`` under the fault; return its results and the database it restored
    into (if any)."""
    ids = repo.ids
    if choice == "backup":
        db = t.new_db("B")
        return [t.cli(["backup", t.url(db), "--target", "shop"], repo)], None
    if choice == "list":
        return [t.cli(["list"], repo)], None
    if choice == "verify-all":
        return [t.cli(["verify", "--all"], repo)], None
    if choice == "verify":
        return [t.cli(["verify", ids["B"]], repo)], None
    if choice == "restore":
        db = t.new_db("B")
        return [t.cli(["restore", ids["A"], "--to", t.url(db), "--yes"], repo)], db
    if choice == "prune":
        return [t.cli(["prune", "--wait", "5"], repo)], None
    if choice == "forget-prune":
        forget = t.cli(["forget", "--keep-last", "1", "--target", "shop"], repo)
        return [forget, t.cli(["prune", "--wait", "5"], repo)], None
    if choice == "check":
        return [t.cli(["check", "--read-data"], repo)], None
    return [t.cli(["cat", ids["B"]], repo, devnull_stdout=True)], None


def s3_trial(t: Trial, faults: tuple[str, ...]) -> None:
    proxy = FaultProxy(t.world.moto_url, seed=t.rng.randrange(2**31))
    proxy.start()
    t.on_close(proxy.stop)
    repo = replace(t.copy_repo(t.world.s3_repo), endpoint=proxy.url)
    fault = t.rng.choice(faults)
    rate = t.rng.choice((1.0, 1.0, 0.5, 0.2))
    count = t.rng.choice((1, 2, 5, None))
    if fault in ("truncate", "corrupt"):  # answers with a body
        methods: frozenset[str] | None = frozenset({"GET"})
        where = t.rng.choice((None, "/chunks/", "/chunks/", "/backups/", "/config"))
    else:
        methods = t.rng.choice((None, None, frozenset({"GET"}), frozenset({"PUT", "DELETE"})))
        where = t.rng.choice(TARGETS)
    choice = t.rng.choice(COMMANDS)
    shown = "all" if methods is None else "+".join(sorted(methods))
    t.notes.append(
        f"{fault} rate {rate} count {count} methods {shown} paths {where or 'all'}; {choice}"
    )
    proxy.set_fault(fault, rate=rate, count=count, methods=methods, key_contains=where)
    results, db = _command(t, repo, choice)
    proxy.set_fault(None)
    t.notes.append(f"{proxy.faults} faults in {proxy.requests} requests")
    forgot = choice == "forget-prune" and results[0].returncode == 0
    if db is not None:
        t.check_restored(db, results[0])
    before = len(t.problems)
    must = [repo.ids["B"]] if forgot else [repo.ids["A"], repo.ids["B"]]
    t.check_repo(repo, must_list=must)
    transient = count in (1, 2) or rate <= 0.2
    intact = len(t.problems) == before
    for result in results:
        if transient and intact and result.returncode == 7:
            t.add(
                "unclear",
                result.command,
                7,
                "reports damage for a transient fault (the stored data is intact): "
                + result.first_stderr_line(),
            )


def s3_5xx(t: Trial) -> None:
    s3_trial(t, ("error500", "error503"))


def s3_throttle(t: Trial) -> None:
    s3_trial(t, ("throttle",))


def s3_reset(t: Trial) -> None:
    s3_trial(t, ("reset",))


def s3_truncate(t: Trial) -> None:
    s3_trial(t, ("truncate",))


def s3_corrupt(t: Trial) -> None:
    s3_trial(t, ("corrupt",))


def s3_blackhole(t: Trial) -> None:
    s3_trial(t, ("blackhole",))


S3 = frozenset({"s3"})
KINDS = [
    Kind("s3-5xx", "S3 answers 500 InternalError / 503 ServiceUnavailable", s3_5xx, 4.0, S3),
    Kind("s3-throttle", "S3 answers 503 SlowDown (throttling)", s3_throttle, 4.0, S3),
    Kind("s3-reset", "S3 connections reset without an answer", s3_reset, 4.0, S3),
    Kind("s3-truncate", "S3 bodies cut in half (full Content-Length)", s3_truncate, 4.0, S3),
    Kind("s3-corrupt", "S3 bodies with flipped bytes (headers unchanged)", s3_corrupt, 4.0, S3),
    Kind(
        "s3-blackhole",
        "S3 requests never answered (STRONGROOM_STORAGE_DEADLINE=5)",
        s3_blackhole,
        9.0,
        S3,
    ),
]
