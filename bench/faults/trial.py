"""One trial: its own folder, databases and repository copy; its commands and their verdict.

A trial's verdict is the worst of what its commands and checks found:

* **lost**: a listed backup does not verify after the fault is gone (``verify --all``), a
  backup that was listed before is gone without a ``forget``, or the target database is
  left changed (its fingerprint matches neither what it held nor what was restored, a
  failed restore changed it, a "successful" one did not restore it) or unusable (gone,
  closed to connections, the app role cannot run its queries);
* **hung**: a command did not exit within the per-command timeout;
* **unclear**: a command failed without exactly one ``error:`` line naming the problem, or
  with an exit code outside the documented set, or printed a traceback or a secret, or
  blamed damage for a fault that was not damage;
* **clean** otherwise: every command succeeded, or failed with one clear line.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import procs
from .procs import CliResult
from .world import (
    BUCKET,
    Repo,
    World,
    app_can_query,
    base_env,
    copy_s3_prefix,
    delete_s3_prefix,
    fingerprint,
)

#: README, "Exit codes" (1: health's warning).
EXIT_CODES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 129, 130, 143})
VERDICTS = ("clean", "lost", "hung", "unclear")
_SEVERITY = {"lost": 0, "hung": 1, "unclear": 2}
#: Words of strongroom's message for a bug (exit 70), whatever its exit code says. (Not
#: "internal error": S3's own 500 answer says "We encountered an internal error".)
GENERIC = ("unexpected failure", "unexpected error")


@dataclass(frozen=True)
class Problem:
    verdict: str  # lost, hung or unclear
    command: str
    exit_code: int | None
    message: str


def output_problem(result: CliResult, secrets: Sequence[str]) -> Problem | None:
    """What is wrong with how a command ended (None: clean)."""
    code = result.returncode

    def problem(verdict: str, message: str) -> Problem:
        return Problem(verdict, result.command, code, message)

    if result.hung:
        return problem("hung", f"no exit within {result.seconds:.0f} s")
    text = result.stdout + result.stderr
    for secret in secrets:
        if secret and secret in text:
            return problem(
                "unclear", f"a secret appears in the output: {result.first_stderr_line()}"
            )
    if "Traceback (most recent call last)" in result.stderr:
        return problem("unclear", "traceback: " + result.stderr.strip().splitlines()[-1][:300])
    if code == 0:
        return None
    if code not in EXIT_CODES:
        return problem("unclear", result.first_stderr_line())
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if len(errors) != 1:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        first = lines[0].strip() if lines else "(no output on stderr)"
        return problem("unclear", f"{len(errors)} error: lines; first stderr line: {first}")
    message = errors[0][len("error:") :].strip()
    if len(message) < 12 or any(word in message.lower() for word in GENERIC):
        return problem("unclear", errors[0])
    return None


class Trial:
    """The context one kind's trial function gets."""

    def __init__(self, world: World, kind: str, index: int, seed: int, timeout: float) -> None:
        self.world = world
        self.kind = kind
        self.index = index
        self.timeout = timeout
        self.rng = random.Random(f"{seed}:{kind}:{index}")
        self.number = world.next_id()
        self.prefix = f"f{self.number:04d}_"  # of every database this trial creates
        self.dir = world.work / f"{kind}-{index:03d}-{self.number:04d}"
        self.dir.mkdir(parents=True)
        self.home = self.dir / "home"
        self.home.mkdir()
        self.problems: list[Problem] = []
        self.notes: list[str] = []  # what the trial did (for the detail lines)
        self._cleanups: list[Callable[[], None]] = []
        self._caches = 0  # fresh index cache folders made (fresh_cache_env)

    # --- verdict ------------------------------------------------------------------------
    def add(self, verdict: str, command: str, exit_code: int | None, message: str) -> None:
        self.problems.append(Problem(verdict, command, exit_code, message))

    @property
    def verdict(self) -> str:
        if not self.problems:
            return "clean"
        return min(self.problems, key=lambda p: _SEVERITY[p.verdict]).verdict

    def worst(self) -> Problem | None:
        if not self.problems:
            return None
        return min(self.problems, key=lambda p: _SEVERITY[p.verdict])

    # --- commands -----------------------------------------------------------------------
    def env(
        self, repo: Repo | None, extra: dict[str, str] | None = None, *, oracle: bool = False
    ) -> dict[str, str]:
        env = base_env(self.home)
        if repo is not None:
            env.update(repo.env(oracle=oracle))
        env.update(extra or {})
        return env

    def judge(self, result: CliResult) -> CliResult:
        found = output_problem(result, self.world.secrets)
        if found is not None:
            self.problems.append(found)
        return result

    def cli(
        self,
        args: Sequence[str],
        repo: Repo | None,
        *,
        extra_env: dict[str, str] | None = None,
        devnull_stdout: bool = False,
        judge: bool = True,
    ) -> CliResult:
        """Run one command to its end (or its timeout) and judge how it ended."""
        result = procs.run(
            args, self.env(repo, extra_env), self.timeout, devnull_stdout=devnull_stdout
        )
        return self.judge(result) if judge else result

    def start(
        self, args: Sequence[str], repo: Repo | None, *, extra_env: dict[str, str] | None = None
    ) -> procs.Running:
        return procs.start(args, self.env(repo, extra_env))

    def finish(self, running: procs.Running) -> CliResult:
        return self.judge(running.finish(self.timeout))

    def kill_at(self, args: Sequence[str], repo: Repo, delay: float) -> CliResult:
        """Run a command and kill -9 it ``delay`` s after its start; judged only when it
        ended before the kill. Children outliving it are an unclear result."""
        result, left = procs.kill_at(args, self.env(repo), delay, self.timeout)
        self.notes.append(
            f"kill -9 after {delay:.2f} s ({'landed' if result.killed_by_us else 'too late'})"
        )
        if not result.killed_by_us:
            self.judge(result)
        if left:
            self.add(
                "unclear", result.command, None, f"processes outlived kill -9: {', '.join(left)}"
            )
        return result

    def kill_when(
        self,
        args: Sequence[str],
        repo: Repo,
        moment: Callable[[], bool],
        *,
        what: str,
        extra_env: dict[str, str] | None = None,
    ) -> CliResult:
        """Run a command and kill -9 it as soon as ``moment()`` holds (polled from outside);
        judged only when it ended first, as :meth:`kill_at`."""
        result, left, seen = procs.kill_when(args, self.env(repo, extra_env), moment, self.timeout)
        landed = result.killed_by_us
        self.notes.append(
            f"kill -9 when {what} ({'landed' if landed else 'ended first'}"
            f"{'' if seen or not landed else ', moment not seen'})"
        )
        if not landed:
            self.judge(result)
        if left:
            self.add(
                "unclear", result.command, None, f"processes outlived kill -9: {', '.join(left)}"
            )
        return result

    # --- resources ----------------------------------------------------------------------
    def new_db(self, state: str, suffix: str = "db") -> str:
        name = f"{self.prefix}{suffix}"
        self.world.create_db(name, state)
        return name

    def url(self, dbname: str) -> str:
        return self.world.url(dbname)

    def copy_repo(self, base: Repo | None) -> Repo:
        """A private copy of a base repository (local folder or S3 prefix)."""
        if base is None:
            raise RuntimeError("the base repository was not built")
        if base.location.startswith("s3://"):
            prefix = f"t{self.number:04d}"
            copy_s3_prefix(self.world, "base", prefix)
            self._cleanups.append(lambda: delete_s3_prefix(self.world, prefix))
            return Repo(
                f"s3://{BUCKET}/{prefix}",
                key_file=base.key_file,
                endpoint=base.endpoint,
                oracle_endpoint=base.oracle_endpoint,
                ids=dict(base.ids),
            )
        target = self.dir / "repo"
        shutil.copytree(base.path, target, symlinks=True)
        key_file = None
        if base.key_file is not None:
            key_file = self.dir / "key"
            shutil.copy2(base.key_file, key_file)
        return Repo(str(target), key_file=key_file, passphrase=base.passphrase, ids=dict(base.ids))

    def on_close(self, action: Callable[[], None]) -> None:
        self._cleanups.append(action)

    def close(self, *, keep: bool = False) -> None:
        for action in reversed(self._cleanups):
            try:
                action()
            except Exception as exc:  # cleanup must not hide the verdict
                self.notes.append(f"cleanup failed: {exc}")
        self.world.drop_dbs(self.prefix)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- oracles ------------------------------------------------------------------------
    def stored_ids(self, repo: Repo) -> list[str]:
        """The backups whose manifests are stored (read from the folder or bucket)."""
        if not repo.location.startswith("s3://"):
            return sorted(p.stem for p in (repo.path / "backups").glob("*.json"))
        prefix = repo.location.removeprefix(f"s3://{BUCKET}/") + "/backups/"
        client = self.world.s3_client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            found += [str(item["Key"])[len(prefix) :] for item in page.get("Contents", [])]
        return sorted(name.removesuffix(".json") for name in found if name.endswith(".json"))

    def fresh_cache_env(self) -> dict[str, str]:
        """``STRONGROOM_CACHE_DIR`` naming a new, empty index cache folder of this trial
        (so a cache filled before a fault cannot hide it)."""
        self._caches += 1
        return {"STRONGROOM_CACHE_DIR": str(self.dir / f"cache-{self._caches}")}

    def check_repo(
        self,
        repo: Repo,
        *,
        must_list: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """Every backup verifies (``verify --all``, the fault gone); each of ``must_list``
        is still stored."""
        stored = self.stored_ids(repo)
        for wanted in must_list:
            if wanted not in stored:
                self.add("lost", "(repository check)", None, f"backup {wanted} is gone")
        env = self.env(repo, oracle=True)
        env.update(extra_env or {})
        result = procs.run(["verify", "--all"], env, self.timeout)
        if result.hung:
            self.add("hung", result.command, None, "verify after the fault did not exit")
        elif result.returncode != 0:
            self.add(
                "lost",
                result.command,
                result.returncode,
                "a listed backup does not verify: " + result.first_stderr_line(),
            )

    def verify_ok(
        self, repo: Repo, backup_id: str, *, why: str, extra_env: dict[str, str] | None = None
    ) -> None:
        """``verify ID`` passes (with the fault still in place); lost otherwise."""
        result = procs.run(["verify", backup_id], self.env(repo, extra_env), self.timeout)
        if result.hung:
            self.add(
                "hung", result.command, None, f"verify of a healthy backup ({why}) did not exit"
            )
        elif result.returncode != 0:
            self.add(
                "lost",
                result.command,
                result.returncode,
                f"a healthy backup does not verify ({why}): " + result.first_stderr_line(),
            )

    def state_of(self, dbname: str) -> str:
        """ "A", "B", "gone", "closed" or "other" (after the fault)."""
        pg = self.world.pg
        row = pg.query(
            "postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname,)
        )
        if not row:
            return "gone"
        if not row[0][0]:
            return "closed"
        print_ = fingerprint(pg, dbname)
        for name, value in self.world.states.items():
            if print_ == value:
                return name
        return "other"

    def check_db(self, dbname: str, allowed: Sequence[str], *, why: str, command: str = "") -> str:
        """The database is in one of the ``allowed`` states and the app can use it."""
        state = self.state_of(dbname)
        if state not in allowed:
            wanted = " or ".join(allowed)
            self.add(
                "lost",
                command or "(database check)",
                None,
                f"database {state}, expected {wanted} ({why})",
            )
            return state
        failure = app_can_query(self.world, dbname)
        if failure is not None:
            self.add(
                "lost", command or "(database check)", None, f"the app role cannot query: {failure}"
            )
        return state

    def check_restored(self, dbname: str, result: CliResult, *, interrupted: bool = False) -> None:
        """After a restore of backup A into a database holding B: restored (A) when it
        succeeded, untouched (B) when it failed, either when it was killed."""
        if interrupted or result.hung:
            self.check_db(dbname, ("A", "B"), why="interrupted restore", command=result.command)
        elif result.returncode == 0:
            self.check_db(dbname, ("A",), why="the restore succeeded", command=result.command)
        elif result.returncode == 8:  # a hook failed after the restore: either is true
            self.check_db(dbname, ("A", "B"), why="hook failed", command=result.command)
        else:
            self.check_db(dbname, ("B",), why="the restore failed", command=result.command)


@dataclass(frozen=True)
class Kind:
    """One row of the table: a name, what it does, the trial function and its rough cost
    in seconds (the slowest kinds are started first)."""

    name: str
    describe: str
    run: Callable[[Trial], None]
    cost: float = 4.0
    needs: frozenset[str] = frozenset({"key"})  # the base repositories (world.NEEDS)
