"""kill -9 at random moments of backup, prune and restore, and at each swap step.

After each kill the trial runs "the next normal command" first (a backup, ``recover`` or
a ``restore --dry-run``: each settles an interrupted swap at its start), then the oracles:
every listed backup verifies, none vanished, and the target database holds what it held
(state B) or what was restored (state A), open to the app role.
"""

from __future__ import annotations

from .procs import CliResult
from .trial import Kind, Trial
from .world import Repo

KILL_ENV = "STRONGROOM_TEST_KILL_AT"
#: engines/swap_journal.SwapStep, in order; a kill at the first four leaves the original
#: (the swap is undone), at the last two the restored copy (the swap is completed).
SWAP_STEPS = ("close", "rename_away", "reopen_old", "rename_in", "drop_old", "finish")
UNDONE_AT = frozenset(SWAP_STEPS[:4])


def _key_repo(t: Trial) -> Repo:
    return t.copy_repo(t.world.key_repo)


def next_command(t: Trial, repo: Repo, dbname: str) -> CliResult:
    """The next normal command touching the database's server (settles a swap)."""
    choice = t.rng.choice(("backup", "recover", "dry-run"))
    url = t.url(dbname)
    if choice == "backup":
        return t.cli(["backup", url, "--target", "shop"], repo)
    if choice == "recover":
        return t.cli(["recover", "--to", url], repo)
    return t.cli(["restore", repo.ids["B"], "--to", url, "--dry-run"], repo)


def kill_backup(t: Trial) -> None:
    repo = _key_repo(t)
    db = t.new_db("B")
    args = ["backup", t.url(db), "--target", "shop"]
    t.kill_at(args, repo, t.rng.uniform(0.05, 1.4))
    t.cli(args, repo)
    t.cli(["prune", "--wait", "5"], repo)
    t.check_repo(repo, must_list=[repo.ids["A"], repo.ids["B"]])
    t.check_db(db, ("B",), why="a backup does not change its database")


def kill_prune(t: Trial) -> None:
    repo = _key_repo(t)
    t.cli(["forget", "--keep-last", "1", "--target", "shop"], repo)
    t.kill_at(["prune"], repo, t.rng.uniform(0.05, 0.9))
    db = t.new_db("B")
    t.cli(["backup", t.url(db), "--target", "shop"], repo)
    t.cli(["prune", "--wait", "5"], repo)
    t.check_repo(repo, must_list=[repo.ids["B"]])


def kill_restore(t: Trial) -> None:
    repo = _key_repo(t)
    db = t.new_db("B")
    args = ["restore", repo.ids["A"], "--to", t.url(db), "--yes"]
    if t.rng.random() < 0.3:
        args.append("--drop-old")
    result = t.kill_at(args, repo, t.rng.uniform(0.1, 2.4))
    nxt = next_command(t, repo, db)
    t.check_restored(db, result, interrupted=result.killed_by_us)
    if not nxt.hung:
        t.check_repo(repo, must_list=[repo.ids["A"], repo.ids["B"]])


def kill_swap(t: Trial) -> None:
    step = SWAP_STEPS[t.index % len(SWAP_STEPS)]
    repo = _key_repo(t)
    db = t.new_db("B")
    args = ["restore", repo.ids["A"], "--to", t.url(db), "--yes"]
    if step == "drop_old" or t.rng.random() < 0.3:
        args.append("--drop-old")
    if t.rng.random() < 0.3:
        args.append("--no-safety-backup")
    result = t.cli(args, repo, extra_env={KILL_ENV: step}, judge=False)
    killed = result.returncode == -9
    t.notes.append(f"kill at swap step {step}: {'landed' if killed else 'not reached'}")
    if not killed:
        t.judge(result)
    # The next command settles the swap (and says so) unless a command of a parallel
    # trial on the same server settled it first: the database check below is what counts.
    nxt = next_command(t, repo, db)
    if not killed:
        t.check_restored(db, result)
    else:
        state = t.check_db(db, ("A", "B"), why=f"restore killed at {step}", command=result.command)
        expected = "B" if step in UNDONE_AT else "A"
        if state in ("A", "B") and state != expected:
            t.add(
                "unclear",
                nxt.command,
                nxt.returncode,
                f"a swap killed at {step} was settled to state {state}; the contract: {expected}",
            )
    t.check_repo(repo, must_list=[repo.ids["A"], repo.ids["B"]])


KINDS = [
    Kind("kill-backup", "kill -9 at a random moment of a PostgreSQL backup", kill_backup, 4.0),
    Kind("kill-prune", "kill -9 at a random moment of prune (after forget)", kill_prune, 4.0),
    Kind("kill-restore", "kill -9 at a random moment of a restore", kill_restore, 5.0),
    Kind("kill-swap", "kill -9 at each swap step (STRONGROOM_TEST_KILL_AT)", kill_swap, 5.0),
]
