"""Faults of the packed format (format version 2, issue 19): kill -9 of a prune while it
repacks, damaged or missing packs and index objects.

``kill-repack`` copies the "repack" base repository (world.py: a forgotten backup left a
pack about a quarter live, so prune repacks it and deletes it), runs ``prune`` and kills
it: at a random moment, from outside as soon as its first new pack appears or its new
index objects appear or an old one goes, or at one of prune's own kill points
(``STRONGROOM_TEST_KILL_AT``). Then every listed backup verifies, the next prune finishes
the work (a ``prune --dry-run`` after it has nothing left to repack, delete or orphan),
``check --read-data`` passes, each with a fresh index cache, and every command's output is
clean.

``damage-pack`` and ``damage-index`` are judged like ``damage-chunk`` (kinds_damage.py):
backups the damage does not touch verify with it in place, a reader of a backup it
touches and ``check --read-data`` must notice it, and after the object is put back
everything verifies. The commands run with a fresh index cache (``STRONGROOM_CACHE_DIR``)
so the cache never hides a damaged or missing index object; in half the ``damage-index``
trials a warm cache (filled before the damage) is used instead, and then only ``check
--read-data`` (which reads every index object again) must notice.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from strongroom.repository.index_objects import list_index_ids, read_index_object
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage

from .kinds_damage import COMMANDS, Saved, chunk_owners, damage_bytes, flip, run_command, settle
from .procs import CliResult
from .trial import Kind, Trial
from .world import Repo

KILL_ENV = "STRONGROOM_TEST_KILL_AT"
#: services/repack.KILL_POINTS (not imported: the harness names them as the docs do)
REPACK_KILL_POINTS = (
    "prune-repack-pack-written",
    "prune-index-written",
    "prune-old-index-deleted",
    "prune-pack-deleted",
)
KILL_MODES = ("random", "random", "random", "new-pack", "index-change", *REPACK_KILL_POINTS)


# --- the repository's packs and index ----------------------------------------------------
def objects(repo: Repo, folder: str) -> set[str]:
    """Names of the objects under ``packs/`` or ``index/`` (64 hex, no temp files)."""
    root = repo.path / folder
    if not root.is_dir():
        return set()
    return {p.name for p in root.glob("??/*") if len(p.name) == 64 and "." not in p.name}


def object_path(repo: Repo, folder: str, name: str) -> Path:
    return repo.path / folder / name[:2] / name


@dataclass(frozen=True)
class PackedChunk:
    chunk_id: str
    offset: int
    length: int


def index_map(repo: Repo) -> dict[str, dict[str, list[PackedChunk]]]:
    """index id -> pack id -> its chunks, read with strongroom's own decoder."""
    opened = Repository.open(LocalStorage(repo.path), KeySource(key_file=repo.key_file))
    sealer = opened.keyring.sealer(for_reading=True)
    out: dict[str, dict[str, list[PackedChunk]]] = {}
    for index_id in sorted(list_index_ids(opened.storage)):
        index = read_index_object(opened.storage, index_id, sealer)
        out[index_id] = {
            pack.pack_id: [PackedChunk(e.chunk_id, e.offset, e.length) for e in pack.entries]
            for pack in index.packs
        }
    return out


def pack_region(data: bytes, position: int) -> str:
    """Which part of a pack ``position`` is in: preamble, key stanza, blobs, header or
    trailer (docs/design.md, "Packs")."""
    if len(data) < 17 or position < 9:
        return "preamble"
    stanza = struct.unpack(">I", data[5:9])[0]
    header = struct.unpack(">I", data[-8:-4])[0]
    if position < 9 + stanza:
        return "key stanza"
    if position >= len(data) - 8:
        return "trailer"
    if position >= len(data) - 8 - header:
        return "header"
    return "blobs"


# --- kill-repack ---------------------------------------------------------------------------
def phase(repo: Repo, packs: set[str], index: set[str]) -> str:
    """Where a killed prune stopped, from what it left (``packs``/``index``: before)."""
    now_packs, now_index = objects(repo, "packs"), objects(repo, "index")
    if not now_index & index and now_index:
        if packs - now_packs:
            return "old index and an old pack deleted"
        return "old index deleted, old packs there"
    if now_index - index:
        return "new index written" + (", old index partly deleted" if index - now_index else "")
    if now_packs - packs:
        return "new packs written, old index in force"
    return "nothing changed yet"


def kill_repack(t: Trial) -> None:
    repo = t.copy_repo(t.world.repack_repo)
    packs, index = objects(repo, "packs"), objects(repo, "index")
    mode = t.rng.choice(KILL_MODES)
    if mode in REPACK_KILL_POINTS:
        result = t.cli(["prune"], repo, extra_env={KILL_ENV: mode}, judge=False)
        landed = result.returncode == -9
        t.notes.append(f"kill at {mode}: {'landed' if landed else 'not reached'}")
        if not landed:
            t.judge(result)
    elif mode == "random":
        result = t.kill_at(["prune"], repo, t.rng.uniform(0.05, 2.8))
        landed = result.killed_by_us
    else:

        def moment() -> bool:
            if mode == "new-pack":
                return bool(objects(repo, "packs") - packs)
            return objects(repo, "index") != index

        result = t.kill_when(["prune"], repo, moment, what=mode)
        landed = result.killed_by_us
    where = phase(repo, packs, index) if landed else "prune ended"
    t.notes.append(f"phase: {where}")
    fresh = t.fresh_cache_env
    t.cli(["verify", "--all"], repo, extra_env=fresh())
    t.cli(["prune", "--wait", "5"], repo, extra_env=fresh())
    after = t.cli(["prune", "--dry-run", "--json"], repo, extra_env=fresh())
    _nothing_left(t, after)
    t.cli(["check", "--read-data"], repo, extra_env=fresh())
    t.check_repo(repo, must_list=[repo.ids["A"], repo.ids["B"]])


def _nothing_left(t: Trial, result: CliResult) -> None:
    if result.returncode != 0:
        return  # judged already
    try:
        plan = json.loads(result.stdout)
    except ValueError:
        t.add("unclear", result.command, 0, "prune --dry-run --json printed no JSON")
        return
    left = {
        key: plan.get(key)
        for key in ("packs_repacked", "packs_deleted", "orphan_packs", "index_objects_deleted")
        if plan.get(key)
    }
    if plan.get("packs_note"):
        left["packs_note"] = plan["packs_note"]
    if left:
        t.add("unclear", result.command, 0, f"the next prune left work undone: {left}")


# --- damage-pack ---------------------------------------------------------------------------
def _owners_of(owners: dict[str, set[str]], chunks: list[PackedChunk]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks:
        found |= owners.get(chunk.chunk_id, set())
    return found


def damage_pack(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    owners = chunk_owners(repo)
    listing = {p: c for packs in index_map(repo).values() for p, c in packs.items()}
    pack_id = t.rng.choice(sorted(listing))
    chunks = listing[pack_id]
    saved = Saved(object_path(repo, "packs", pack_id))
    data = saved.original or b""
    variant = t.rng.choice(
        ("flip", "flip", "truncate", "empty", "missing", "garbage", "append", "swap")
    )
    detail = variant
    if variant == "flip":
        where = t.rng.random()
        position = min(len(data) - 1, int(len(data) * where))
        region = pack_region(data, position)
        saved.write(flip(data, where))
        hit = [c for c in chunks if c.offset <= position < c.offset + c.length]
        touched = _owners_of(owners, hit) if region == "blobs" else set()
        detail = f"flip in the {region} at {position}"
    elif variant == "truncate":
        cut = t.rng.randrange(max(1, len(data)))
        saved.write(data[:cut])
        touched = _owners_of(owners, [c for c in chunks if c.offset + c.length > cut])
        detail = f"truncate to {cut} of {len(data)}"
    elif variant == "append":
        saved.write(data + b"\n{trailing garbage")
        touched = set()
    elif variant == "swap":  # another pack's bytes under this name
        other = t.rng.choice(sorted(set(listing) - {pack_id}))
        saved.write(object_path(repo, "packs", other).read_bytes())
        touched = _owners_of(owners, chunks)
    else:
        _, content = damage_bytes(t, data, (variant,))
        saved.write(content)
        touched = _owners_of(owners, chunks)
    choice = t.rng.choice(COMMANDS)
    t.notes.append(f"pack {pack_id[:12]} {detail}; {choice}")
    env = t.fresh_cache_env()
    result, reads, db = run_command(t, repo, choice, extra_env=env)
    _must_notice(t, result, reads, touched, check_too=True)
    settle(
        t,
        repo,
        result,
        reads,
        db,
        touched,
        saved,
        removed_by_us=variant == "missing",
        must_notice=False,
        env=env,
    )


def _must_notice(
    t: Trial, result: CliResult, reads: str | None, touched: set[str], *, check_too: bool
) -> None:
    """A reader of a touched backup (or ``check --read-data``, when ``check_too``) that
    exits 0 did not notice the damage."""
    if result.returncode != 0 or reads is None:
        return
    is_check = result.args[:1] == ["check"]
    if (is_check and check_too) or (reads == "*" and touched) or reads in touched:
        t.add("unclear", result.command, 0, "the damage went unnoticed (exit 0)")


def damage_blob(t: Trial, repo: Repo, owners: dict[str, set[str]]) -> None:
    """``damage-chunk`` in a packed repository: one referenced chunk's blob damaged in
    place (the pack keeps its length): a byte flipped, zeroed, random bytes or another
    blob's bytes."""
    listing = {p: c for packs in index_map(repo).values() for p, c in packs.items()}
    blobs = sorted(
        ((pack_id, chunk) for pack_id, chunks in listing.items() for chunk in chunks),
        key=lambda pc: (pc[0], pc[1].offset),
    )
    pack_id, chunk = t.rng.choice([pc for pc in blobs if pc[1].chunk_id in owners])
    saved = Saved(object_path(repo, "packs", pack_id))
    data = saved.original or b""
    start, end = chunk.offset, chunk.offset + chunk.length
    variant = t.rng.choice(("flip", "zero", "garbage", "other-blob"))
    if variant == "flip":
        blob = flip(data[start:end], t.rng.random())
    elif variant == "zero":
        blob = bytes(chunk.length)
    elif variant == "garbage":
        blob = t.rng.randbytes(chunk.length)
    else:
        other_pack, other = t.rng.choice([pc for pc in blobs if pc[1] != chunk])
        source = object_path(repo, "packs", other_pack).read_bytes()
        blob = source[other.offset : other.offset + other.length][: chunk.length]
        blob = blob.ljust(chunk.length, b"\0")
    saved.write(data[:start] + blob + data[end:])
    choice = t.rng.choice(COMMANDS)
    t.notes.append(
        f"blob of chunk {chunk.chunk_id[:12]} in pack {pack_id[:12]} {variant}; {choice}"
    )
    env = t.fresh_cache_env()
    result, reads, db = run_command(t, repo, choice, extra_env=env)
    touched = owners[chunk.chunk_id]
    _must_notice(t, result, reads, touched, check_too=True)
    settle(
        t, repo, result, reads, db, touched, saved, removed_by_us=False, must_notice=False, env=env
    )


# --- damage-index --------------------------------------------------------------------------
def damage_index(t: Trial) -> None:
    repo = t.copy_repo(t.world.key_repo)
    owners = chunk_owners(repo)
    mapping = index_map(repo)
    index_id = t.rng.choice(sorted(mapping))
    saved = Saved(object_path(repo, "index", index_id))
    warm = t.rng.random() < 0.5
    env = t.fresh_cache_env()
    if warm:  # the cache has read every index object before the damage
        t.cli(["verify", "--all"], repo, extra_env=env)
    variant = t.rng.choice(("flip", "truncate", "empty", "missing", "garbage", "swap"))
    if variant == "swap":  # another index object's bytes under this name
        other = t.rng.choice(sorted(set(mapping) - {index_id}))
        saved.write(object_path(repo, "index", other).read_bytes())
    else:
        variant, content = damage_bytes(t, saved.original or b"", (variant,))
        saved.write(content)
    touched: set[str] = set()
    for chunks in mapping[index_id].values():
        touched |= _owners_of(owners, chunks)
    choice = t.rng.choice(COMMANDS)
    t.notes.append(
        f"index {index_id[:12]} {variant}; {'warm' if warm else 'fresh'} cache; {choice}"
    )
    result, reads, db = run_command(t, repo, choice, extra_env=env)
    # a warm cache keeps what it read (docs/design.md, "Local index cache"): only check
    # --read-data, which reads every index object again, must notice then
    _must_notice(t, result, reads, set() if warm else touched, check_too=True)
    settle(
        t,
        repo,
        result,
        reads,
        db,
        touched,  # with a fresh cache (below), the untouched backups must verify
        saved,
        removed_by_us=variant == "missing",
        must_notice=False,
        env=t.fresh_cache_env(),
    )


KINDS = [
    Kind(
        "kill-repack",
        "kill -9 of prune while it repacks (random moment, first new pack seen, index "
        "change seen, or STRONGROOM_TEST_KILL_AT)",
        kill_repack,
        8.0,
        frozenset({"repack"}),
    ),
    Kind(
        "damage-pack",
        "a pack flipped (key stanza, blob, header, trailer), truncated, emptied, removed, "
        "replaced or extended",
        damage_pack,
        4.0,
    ),
    Kind(
        "damage-index",
        "an index object flipped, truncated, emptied, removed or replaced (fresh or warm "
        "index cache)",
        damage_index,
        4.0,
    ),
]
