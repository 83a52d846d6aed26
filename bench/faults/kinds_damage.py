"""Damaged, truncated and missing chunks, manifests, config, keys and locks; wrong keys.

Each trial copies a base repository, damages one object (drawn at random, with a variant
drawn at random), and runs one command drawn at random. Then:

1. backups the damage does not touch must still verify with the damage in place (one
   damaged manifest or chunk must not take the others down): *lost* otherwise;
2. a ``verify``/``check --read-data``/``restore``/``cat`` of a backup the damage does
   touch that exits 0 did not notice the damage: *unclear*;
3. the damaged object is put back as it was (unless the command removed it), and every
   backup must verify and the target database hold B (or A after a restore that
   succeeded): what the command did while the repository was damaged destroyed nothing.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from strongroom.processes import this_process

from .procs import CliResult
from .trial import Kind, Trial
from .world import PASSPHRASE, Repo

COMMANDS = (
    "list",
    "verify-all",
    "verify-A",
    "verify-B",
    "restore",
    "backup",
    "prune",
    "check",
    "cat",
    "forget",
)


# --- damage ---------------------------------------------------------------------------
def flip(data: bytes, rng_position: float) -> bytes:
    if not data:
        return b"\xff"
    spoiled = bytearray(data)
    position = min(len(data) - 1, int(len(data) * rng_position))
    spoiled[position] ^= 0x5A
    return bytes(spoiled)


def damage_bytes(t: Trial, data: bytes, variants: tuple[str, ...]) -> tuple[str, bytes | None]:
    """(variant, new content); None: the object is removed."""
    variant = t.rng.choice(variants)
    if variant == "flip":
        return variant, flip(data, t.rng.random())
    if variant == "truncate":
        return variant, data[: t.rng.randrange(max(1, len(data)))]
    if variant == "empty":
        return variant, b""
    if variant == "missing":
        return variant, None
    if variant == "garbage":
        return variant, os.urandom(t.rng.randrange(1, 400))
    if variant == "append":
        return variant, data + b"\n{trailing garbage"
    raise ValueError(variant)


class Saved:
    """An object's original bytes, to put back after the command."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = path.read_bytes() if path.exists() else None
        self.mode = path.stat().st_mode & 0o777 if path.exists() else 0o600

    def write(self, content: bytes | None) -> None:
        if content is None:
            self.path.unlink(missing_ok=True)
        else:
            self.path.write_bytes(content)

    def repair(self, *, removed_by_us: bool) -> bool:
        """Put the original back; False when the command removed the object itself (a
        removed chunk stays removed, and the oracle sees the loss)."""
        if not self.path.exists() and not removed_by_us:
            return False
        if self.original is None:
            self.path.unlink(missing_ok=True)
        else:
            self.path.write_bytes(self.original)
            os.chmod(self.path, self.mode)
        return True


def chunk_owners(repo: Repo) -> dict[str, set[str]]:
    """chunk id -> the backups whose manifests list it (manifests are clear JSON)."""
    owners: dict[str, set[str]] = {}
    for manifest in (repo.path / "backups").glob("*.json"):
        for chunk_id, _size in json.loads(manifest.read_text())["chunks"]:
            owners.setdefault(chunk_id, set()).add(manifest.stem)
    return owners


# --- commands ---------------------------------------------------------------------------
def run_command(
    t: Trial, repo: Repo, choice: str, *, extra_env: dict[str, str] | None = None
) -> tuple[CliResult, str | None, str | None]:
    """Run ``choice``: (result, the backup it reads or None, the database it restored into)."""
    ids = repo.ids
    env = extra_env or {}
    if choice == "list":
        return t.cli(["list"], repo, extra_env=env), None, None
    if choice == "verify-all":
        return t.cli(["verify", "--all"], repo, extra_env=env), "*", None
    if choice in ("verify-A", "verify-B"):
        which = ids[choice[-1]]
        return t.cli(["verify", which], repo, extra_env=env), which, None
    if choice == "restore":
        db = t.new_db("B")
        args = ["restore", ids["A"], "--to", t.url(db), "--yes"]
        return t.cli(args, repo, extra_env=env), ids["A"], db
    if choice == "backup":
        db = t.new_db("B", "src")
        return t.cli(["backup", t.url(db), "--target", "shop"], repo, extra_env=env), None, None
    if choice == "prune":
        return t.cli(["prune", "--wait", "5"], repo, extra_env=env), None, None
    if choice == "check":
        return t.cli(["check", "--read-data"], repo, extra_env=env), "*", None
    if choice == "cat":
        return t.cli(["cat", ids["B"]], repo, extra_env=env, devnull_stdout=True), ids["B"], None
    forget = ["forget", "--keep-last", "1", "--target", "shop"]
    return t.cli(forget, repo, extra_env=env), None, None


def settle(
    t: Trial,
    repo: Repo,
    result: CliResult,
    reads: str | None,
    db: str | None,
    damaged: set[str],
    saved: Saved | None,
    *,
    removed_by_us: bool,
    healthy_check: bool = True,
    must_notice: bool = True,
    env: dict[str, str] | None = None,
) -> None:
    """Steps 1-3 of the module docstring; ``damaged``: the backups the damage touches
    (every backup: "*"); ``env``: added to the checks' environment (a fresh cache)."""
    all_ids = set(repo.ids.values())
    touched = all_ids if "*" in damaged else damaged
    noticed_nothing = must_notice and reads is not None and result.returncode == 0 and bool(damaged)
    if noticed_nothing and ((reads == "*" and touched) or reads in touched):
        t.add("unclear", result.command, 0, "the damage went unnoticed (exit 0)")
    forgot = result.args[:1] == ["forget"] and result.returncode == 0
    if healthy_check and "*" not in damaged and not forgot:
        for backup_id in sorted(all_ids - touched):
            t.verify_ok(repo, backup_id, why="another object is damaged", extra_env=env)
    if saved is not None and not saved.repair(removed_by_us=removed_by_us):
        t.notes.append(f"{saved.path.name} was removed by the command")
    if db is not None:
        t.check_restored(db, result)
    must = [repo.ids["B"]] if forgot else sorted(all_ids)
    # after the repair, a cache of its own: one filled while the object was damaged may
    # keep what it read then (reported for index objects, bench/README.md)
    t.check_repo(repo, must_list=must, extra_env=None if env is None else t.fresh_cache_env())


# --- kinds ------------------------------------------------------------------------------
def damage_chunk(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    owners = chunk_owners(repo)
    if not (repo.path / "chunks").is_dir():  # format version 2: the chunk is a pack's blob
        from .kinds_packs import damage_blob

        damage_blob(t, repo, owners)
        return
    chunk_id = t.rng.choice(sorted(owners))
    path = repo.path / "chunks" / chunk_id[:2] / chunk_id
    saved = Saved(path)
    variant = t.rng.choice(("flip", "truncate", "empty", "missing", "garbage", "append", "swap"))
    if variant == "swap":  # another chunk's bytes under this name
        other = t.rng.choice(sorted(set(owners) - {chunk_id}))
        saved.write((repo.path / "chunks" / other[:2] / other).read_bytes())
    else:
        variant, content = damage_bytes(t, saved.original or b"", (variant,))
        saved.write(content)
    choice = t.rng.choice(COMMANDS)
    t.notes.append(f"chunk {chunk_id[:12]} {variant}; {choice}")
    result, reads, db = run_command(t, repo, choice)
    settle(t, repo, result, reads, db, owners[chunk_id], saved, removed_by_us=variant == "missing")


def _evil_manifest(doc: dict[str, object], variant: str) -> dict[str, object]:
    chunks = doc["chunks"]
    assert isinstance(chunks, list)
    if variant == "swap-chunks" and len(chunks) > 1:
        chunks[0], chunks[1] = chunks[1], chunks[0]
    elif variant == "evil-chunk-name":
        chunks[0] = ["../../config", chunks[0][1]]
    elif variant == "bad-size":
        chunks[-1] = [chunks[-1][0], -5]
    elif variant == "private":
        private = doc["private"]
        assert isinstance(private, dict)
        data = str(private["data"])
        middle = len(data) // 2
        private["data"] = data[:middle] + ("A" if data[middle] != "A" else "B") + data[middle + 1 :]
    elif variant == "checksum":
        checksum = doc["stream_checksum"]
        assert isinstance(checksum, dict)
        checksum["hex"] = "0" * 64
    elif variant == "version":
        doc["version"] = 99
    return doc


def damage_manifest(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    which = t.rng.choice(("A", "B"))
    backup_id = repo.ids[which]
    saved = Saved(repo.path / "backups" / f"{backup_id}.json")
    variant = t.rng.choice(
        (
            "flip",
            "truncate",
            "empty",
            "missing",
            "garbage",
            "swap-chunks",
            "evil-chunk-name",
            "bad-size",
            "private",
            "checksum",
            "version",
        )
    )
    if variant in ("flip", "truncate", "empty", "missing", "garbage"):
        variant, content = damage_bytes(t, saved.original or b"", (variant,))
    else:
        doc = json.loads(saved.original or b"{}")
        content = json.dumps(_evil_manifest(doc, variant), indent=1).encode()
    saved.write(content)
    choice = t.rng.choice(COMMANDS)
    t.notes.append(f"manifest {which} {variant}; {choice}")
    result, reads, db = run_command(t, repo, choice)
    # a flipped byte may land in a field no command needs; a removed manifest is no backup
    notice = variant not in ("flip", "missing")
    if variant == "checksum" and choice == "check":
        notice = False  # check reads chunks, not streams: verify is what checks a stream
    if variant == "private" and choice == "cat":
        notice = False  # cat gives the raw dump, which needs no private section: right
    removed = variant == "missing"
    settle(
        t, repo, result, reads, db, {backup_id}, saved, removed_by_us=removed, must_notice=notice
    )


def damage_config(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    saved = Saved(repo.path / "config")
    variant = t.rng.choice(
        (
            "flip",
            "truncate",
            "empty",
            "missing",
            "garbage",
            "version",
            "chunker",
            "key-base64",
            "compression",
        )
    )
    if variant in ("flip", "truncate", "empty", "missing", "garbage"):
        variant, content = damage_bytes(t, saved.original or b"", (variant,))
    else:
        doc = json.loads(saved.original or b"{}")
        if variant == "version":
            doc["version"] = 99
        elif variant == "chunker":
            doc["chunker"]["avg_size"] = t.rng.choice((0, -1, 2**40))
        elif variant == "key-base64":
            doc["hash"]["key_wrapped"] = "!!not base64!!"
        else:
            doc["compression"]["algorithm"] = "lzma-9000"
        content = json.dumps(doc, indent=2).encode()
    saved.write(content)
    choice = t.rng.choice(COMMANDS)
    t.notes.append(f"config {variant}; {choice}")
    result, reads, db = run_command(t, repo, choice)
    # an unreadable config must stop every command; a field a command does not use need not
    notice = variant in ("truncate", "empty", "missing", "garbage", "version")
    removed = variant == "missing"
    settle(t, repo, result, reads, db, {"*"}, saved, removed_by_us=removed, must_notice=notice)


def damage_key(t: Trial) -> None:
    passphrase = t.rng.random() < 0.3
    repo = t.copy_repo(t.world.pass_repo if passphrase else t.world.key_repo)
    if passphrase:
        saved = Saved(repo.path / "keys" / "identity.age")
    else:
        assert repo.key_file is not None
        saved = Saved(repo.key_file)
    variant = t.rng.choice(("flip", "truncate", "empty", "missing", "garbage", "public-key"))
    if variant == "public-key" and not passphrase:
        lines = (saved.original or b"").decode().splitlines()
        public = [line for line in lines if "public key:" in line]
        content: bytes | None = (
            (public[0].split(":", 1)[1].strip() + "\n").encode() if public else b"age1x\n"
        )
    else:
        if variant == "public-key":
            variant = "garbage"
        variant, content = damage_bytes(t, saved.original or b"", (variant,))
    saved.write(content)
    choice = t.rng.choice(COMMANDS)
    t.notes.append(f"{'wrapped key' if passphrase else 'key file'} {variant}; {choice}")
    result, reads, db = run_command(t, repo, choice)
    # a flip or a cut may spare the key itself (a comment line, the final newline)
    notice = variant in ("empty", "missing", "garbage", "public-key")
    removed = variant == "missing"
    settle(t, repo, result, reads, db, {"*"}, saved, removed_by_us=removed, must_notice=notice)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _lock_doc(kind: str, *, pid: int, owner: str, expires_in: float) -> dict[str, object]:
    now = time.time()

    def iso(moment: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(moment))

    return {
        "format": "strongroom-lock",
        "version": 1,
        "lock_id": time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime(now)) + os.urandom(8).hex(),
        "kind": kind,
        "purpose": "prune" if kind == "exclusive" else "backup of shop",
        "owner": owner,
        "pid": pid,
        "created": iso(now - 30),
        "refreshed": iso(now - 5),
        "expires": iso(now + expires_in),
        "ttl_seconds": 300.0,
        "sequence": 3,
    }


def damage_lock(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    variant = t.rng.choice(
        (
            "invalid-json",
            "empty",
            "truncated",
            "dead-exclusive",
            "dead-shared",
            "version",
            "expired-foreign",
            "garbage",
        )
    )
    here = f"{getpass.getuser()}@{socket.gethostname()}"
    kind = "shared" if variant == "dead-shared" else "exclusive"
    doc = _lock_doc(kind, pid=_dead_pid(), owner=here, expires_in=290)
    # a lock as this version writes it: who held it, precisely enough to tell that its
    # process on this machine is gone (a lock without these fields, from an older version,
    # is left to its lease, as one from another machine is)
    me = this_process()
    doc.update(
        hostname=me.hostname,
        boot_id=me.boot_id,
        pid_namespace=me.pid_namespace,
        start_ticks=(me.start_ticks or 1) + 1,
    )
    if variant == "expired-foreign":
        doc = _lock_doc("exclusive", pid=4242, owner="ops@elsewhere", expires_in=-3600)
    elif variant == "version":
        doc["version"] = 99
    text = json.dumps(doc).encode()
    content = {
        "invalid-json": b'{"format": "strongroom-lock", ',
        "empty": b"",
        "truncated": text[: len(text) // 2],
        "garbage": os.urandom(64),
    }.get(variant, text)
    locks = repo.path / "locks"
    locks.mkdir(exist_ok=True)
    saved = Saved(locks / f"{doc['lock_id']}.json")
    saved.write(content)
    choice = t.rng.choice(("backup", "prune", "restore", "forget", "verify-all", "check"))
    if variant == "version":
        # a lock a newer strongroom wrote is respected: a command that needs the lock
        # waits for it, saying so, until it is unchanged for a whole lease (300 s); the
        # bounded command (prune --wait 5) and the readers show the outcome in a trial
        choice = t.rng.choice(("prune", "verify-all", "check"))
    t.notes.append(f"lock {variant}; {choice}")
    result, _reads, db = run_command(t, repo, choice)
    saved.path.unlink(missing_ok=True)  # repaired: no lock left behind by us
    settle(t, repo, result, None, db, set(), None, removed_by_us=False, healthy_check=False)


def wrong_key(t: Trial) -> None:
    variant = t.rng.choice(
        (
            "other-key",
            "other-key",
            "wrong-passphrase",
            "no-passphrase",
            "passphrase-for-keyfile",
            "missing-key-file",
            "keyfile-for-passphrase",
            "empty-passphrase",
        )
    )
    passphrase_repo = variant in (
        "wrong-passphrase",
        "no-passphrase",
        "keyfile-for-passphrase",
        "empty-passphrase",
    )
    repo = t.copy_repo(t.world.pass_repo if passphrase_repo else t.world.key_repo)
    wrong = Repo(repo.location, ids=repo.ids)
    if variant == "other-key":
        wrong.key_file = t.world.other_key
    elif variant == "wrong-passphrase":
        wrong.passphrase = PASSPHRASE + " and more"
    elif variant == "passphrase-for-keyfile":
        wrong.passphrase = PASSPHRASE
    elif variant == "missing-key-file":
        wrong.key_file = t.dir / "no-such.key"
    elif variant == "keyfile-for-passphrase":
        wrong.key_file = t.world.other_key
    elif variant == "empty-passphrase":
        wrong.passphrase = ""
    choice = t.rng.choice(COMMANDS)
    t.notes.append(f"{variant}; {choice}")
    result, _reads, db = run_command(t, wrong, choice)
    if db is not None:
        t.check_restored(db, result)
    forgot = choice == "forget" and result.returncode == 0
    t.check_repo(repo, must_list=[repo.ids["B"]] if forgot else sorted(repo.ids.values()))


KINDS = [
    Kind(
        "damage-chunk",
        "a chunk flipped, truncated, emptied, removed, replaced or extended (loose chunks); "
        "in packs: its blob flipped, zeroed, random or another blob's bytes",
        damage_chunk,
        4.0,
    ),
    Kind(
        "damage-manifest",
        "a manifest damaged (bytes, JSON, chunks swapped, '../../config' chunk, private part, "
        "checksum, version) or removed",
        damage_manifest,
        4.0,
    ),
    Kind(
        "damage-config",
        "the config damaged (bytes, version, chunker, wrapped key, algorithm) or removed",
        damage_config,
        3.0,
    ),
    Kind(
        "damage-key",
        "the key file or the passphrase-wrapped key damaged or removed",
        damage_key,
        4.0,
        frozenset({"key", "pass"}),
    ),
    Kind(
        "damage-lock",
        "a lock that is not valid JSON, truncated, of a dead local process, expired, of a "
        "newer version",
        damage_lock,
        5.0,
    ),
    Kind(
        "wrong-key",
        "another repository's key, a wrong or empty passphrase, no key",
        wrong_key,
        4.0,
        frozenset({"key", "pass", "other"}),
    ),
]
