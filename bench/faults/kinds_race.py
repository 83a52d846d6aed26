"""Two commands racing on one repository or one database.

* ``race-prune``: a ``verify`` or a ``restore`` of backup A while ``forget --keep-last 1``
  (which forgets A) and ``prune`` run. Either may win; a loser must say so clearly, and a
  verify that lost its backup to ``forget`` must not call it damaged.
* ``race-backups``: two backups of one database into one repository at once.
* ``race-restores``: two restores of backup A into one database at once.

The second command starts a random 0-0.8 s after the first. Oracles: every backup stored
verifies, none vanished that nobody forgot, and the database holds B or (after a
successful restore) A, open to the app role.
"""

from __future__ import annotations

import time

from .trial import Kind, Trial


def race_prune(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    a_id, b_id = repo.ids["A"], repo.ids["B"]
    restore = t.rng.random() < 0.5
    db = t.new_db("B") if restore else None
    if db is not None:
        first = t.start(["restore", a_id, "--to", t.url(db), "--yes"], repo)
    else:
        first = t.start(["verify", a_id], repo)
    delay = t.rng.uniform(0.0, 0.8)
    t.notes.append(f"{'restore' if restore else 'verify'} of A, forget + prune after {delay:.2f} s")
    time.sleep(delay)
    forget = t.cli(["forget", "--keep-last", "1", "--target", "shop"], repo)
    t.cli(["prune", "--wait", "15"], repo)
    result = t.finish(first)
    forgotten = forget.returncode == 0 and a_id not in t.stored_ids(repo)
    if forgotten and result.returncode == 7:
        t.add(
            "unclear",
            result.command,
            7,
            "calls a backup that was forgotten meanwhile damaged: " + result.first_stderr_line(),
        )
    if db is not None:
        t.check_restored(db, result)
    t.check_repo(repo, must_list=[b_id] if forgotten else [a_id, b_id])


def race_backups(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    db = t.new_db("B")
    args = ["backup", t.url(db), "--target", "shop"]
    first = t.start(args, repo)
    delay = t.rng.uniform(0.0, 0.8)
    t.notes.append(f"second backup after {delay:.2f} s")
    time.sleep(delay)
    second = t.cli(args, repo)
    result = t.finish(first)
    made = sum(1 for r in (result, second) if r.returncode == 0)
    stored = t.stored_ids(repo)
    if len(stored) != 2 + made:
        t.add(
            "lost",
            second.command,
            second.returncode,
            f"{made} backups succeeded, {len(stored) - 2} stored",
        )
    t.check_db(db, ("B",), why="a backup does not change its database")
    t.check_repo(repo, must_list=[repo.ids["A"], repo.ids["B"]])


def race_restores(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    db = t.new_db("B")
    args = ["restore", repo.ids["A"], "--to", t.url(db), "--yes"]
    first = t.start(args, repo)
    delay = t.rng.uniform(0.0, 0.8)
    t.notes.append(f"second restore after {delay:.2f} s")
    time.sleep(delay)
    second = t.cli(args, repo)
    result = t.finish(first)
    ok = [r for r in (result, second) if r.returncode == 0]
    hung = any(r.hung for r in (result, second))
    if ok or hung:
        t.check_db(
            db,
            ("A",) if ok and not hung else ("A", "B"),
            why="a restore succeeded",
            command=second.command,
        )
    else:
        t.check_db(db, ("B",), why="both restores failed", command=second.command)
    t.check_repo(repo, must_list=[repo.ids["A"], repo.ids["B"]])


KINDS = [
    Kind(
        "race-prune",
        "restore or verify of a backup while forget + prune remove it",
        race_prune,
        5.0,
    ),
    Kind(
        "race-backups", "two backups of one database into one repository at once", race_backups, 4.0
    ),
    Kind("race-restores", "two restores into one database at once", race_restores, 6.0),
]
