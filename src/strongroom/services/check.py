"""The check use case: every manifest's chunks exist; with ``read_data``, each decrypts,
decompresses and hashes to its name (all of them, or a random share). With packs, index
objects and packs are checked too (``services/check_packs.py``): ``--subset`` is then a
share of the packs (read whole) plus the same share of the loose chunks."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from strongroom.errors import (
    BackupNotFound,
    ChunkDamaged,
    ChunkMissing,
    IntegrityError,
    ManifestDamaged,
    RepositoryError,
    StrongroomError,
    UsageError,
)
from strongroom.repository.chunks import has_packs
from strongroom.repository.layout import (
    CHUNKS_PREFIX,
    LOGS_PREFIX,
    chunk_id_of_key,
    chunk_key,
    is_chunk_id,
    manifest_key,
)
from strongroom.repository.logs import LogArchive
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.check_packs import PackCheck, check_packs, index_lied
from strongroom.services.wal_status import WalStatus, wal_status

DEFAULT_WORKERS = 4
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")


def parse_subset(text: str) -> float:
    """``10%`` -> 0.1; raises ``UsageError`` unless it is a share above 0 and at most 100%."""
    match = _PERCENT.fullmatch(text.strip())
    share = float(match[1]) / 100 if match else 0.0
    if not match or not 0 < share <= 1:
        raise UsageError(f"invalid --subset {text!r}: give a share such as 10% (above 0, <= 100%)")
    return share


@dataclass(frozen=True)
class Problem:
    kind: str  # "manifest", "missing", "damaged", "size", "order", "log" (a WAL object),
    # "wal" (WAL a retained base backup needs is missing, or a timeline's history)
    subject: str  # a backup id or a chunk id
    message: str
    backups: tuple[str, ...] = ()  # backups that need the chunk


@dataclass(frozen=True)
class CheckReport:
    backups: int  # manifests read
    referenced_chunks: int
    stored_chunks: int
    unreferenced_chunks: int
    read_data: bool
    subset: float | None
    chunks_read: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    wal_streams: int = 0  # WAL streams looked at (continuity: services/wal_status.py)
    wal_segments: int = 0
    index_objects: int = 0  # listed under index/ (packs: services/check_packs.py)
    packs: int = 0  # listed under packs/
    unlisted_packs: int = 0  # packs no index object lists (prune deletes them)
    packs_read: int = 0  # read whole with read_data

    @property
    def ok(self) -> bool:
        return not self.problems


def check_repository(
    repo: Repository,
    *,
    read_data: bool = False,
    subset: float | None = None,
    rng: random.Random | None = None,
    workers: int = DEFAULT_WORKERS,
) -> CheckReport:
    """Check the repository; problems are reported in the result, never raised."""
    storage = repo.storage
    problems: list[Problem] = []
    manifests: list[Manifest] = []
    # Manifests first: every chunk a listed manifest needs was stored before it, so it
    # must show up in the chunk listing that follows (unless forget+prune removed both).
    for backup_id in repo.backup_ids():
        try:
            manifests.append(repo.load_manifest(backup_id))
        except BackupNotFound:
            continue
        except RepositoryError as exc:
            problems.append(Problem("manifest", backup_id, exc.message, (backup_id,)))
    users: dict[str, list[str]] = {}
    sizes: dict[str, set[int]] = {}
    for m in manifests:
        for ref in m.chunks:
            users.setdefault(ref.chunk_id, [])
            if not users[ref.chunk_id] or users[ref.chunk_id][-1] != m.backup_id:
                users[ref.chunk_id].append(m.backup_id)
            sizes.setdefault(ref.chunk_id, set()).add(ref.size)
    listed = (chunk_id_of_key(key) for key in storage.list(CHUNKS_PREFIX))
    loose = {chunk_id for chunk_id in listed if is_chunk_id(chunk_id)}
    packs: PackCheck | None = None
    if has_packs(storage):  # then knowing the stored chunks needs the key (index)
        packs = check_packs(
            repo, sizes, read_data=read_data, subset=subset, rng=rng, workers=workers
        )
    if packs is not None and index_lied(repo, set(users) - packs.stored - loose):
        # the shared cache lost or moved rows: again, on a cache rebuilt from index/
        return check_repository(repo, read_data=read_data, subset=subset, rng=rng, workers=workers)
    stored = loose | packs.stored if packs is not None else loose

    def still_needed_by(chunk_id: str) -> tuple[str, ...]:
        return tuple(b for b in users[chunk_id] if storage.exists(manifest_key(b)))

    def add(kind: str, subject: str, message: str) -> None:
        if kind in ("index", "pack"):
            problems.append(Problem(kind, subject, message))
            return
        needed = still_needed_by(subject)  # not a problem if its backups were forgotten
        if needed:
            problems.append(Problem(kind, subject, message, needed))

    findings = packs.findings if packs is not None else []
    for finding in findings:
        if finding.kind == "index" or (finding.kind == "missing" and finding.subject not in loose):
            add(finding.kind, finding.subject, finding.message)
    reported = {f.subject for f in findings if f.kind == "missing"}
    for chunk_id in sorted(set(users) - stored - reported):
        if storage.exists(chunk_key(chunk_id)):
            continue  # stored meanwhile
        where = " (no index object lists it and it is not loose)" if packs is not None else ""
        add("missing", chunk_id, f"chunk {chunk_id} is missing{where}")
    for finding in findings:
        if finding.kind not in ("index", "missing"):
            add(finding.kind, finding.subject, finding.message)

    wal = wal_status(repo)
    problems += wal_problems(wal)
    chunks_read = packs.chunks_read if packs is not None else 0
    bytes_read = packs.bytes_read if packs is not None else 0
    if read_data:
        problems += _order_problems(repo, manifests)
        problems += _log_problems(repo, workers)
        present = sorted(set(users) & (loose - packs.stored if packs is not None else loose))
        chosen = present
        if subset is not None and subset < 1:
            count = min(len(present), math.ceil(subset * len(present)))
            chosen = sorted((rng or random.Random()).sample(present, count))  # noqa: S311
        store = repo.chunks

        def read(chunk_id: str) -> tuple[str, int, Problem | None]:
            try:
                size = len(store.load(chunk_id))
            except ChunkMissing as exc:
                return chunk_id, 0, Problem("missing", chunk_id, exc.message)
            except ChunkDamaged as exc:
                return chunk_id, 0, Problem("damaged", chunk_id, exc.message)
            expected = sizes[chunk_id]
            if expected != {size}:
                message = (
                    f"chunk {chunk_id} holds {size} bytes, manifests record "
                    f"{', '.join(str(s) for s in sorted(expected))}"
                )
                return chunk_id, size, Problem("size", chunk_id, message)
            return chunk_id, size, None

        results = _parallel(read, chosen, workers) if chosen else []
        for chunk_id, size, problem in results:
            chunks_read += 1
            bytes_read += size
            if problem is not None:
                needed = still_needed_by(chunk_id)  # forgotten meanwhile: no problem
                if needed:
                    problems.append(Problem(problem.kind, chunk_id, problem.message, needed))
    return CheckReport(
        backups=len(manifests),
        referenced_chunks=len(users),
        stored_chunks=len(stored),
        unreferenced_chunks=len(stored - set(users)),
        read_data=read_data,
        subset=subset if read_data else None,
        chunks_read=chunks_read,
        bytes_read=bytes_read,
        problems=problems,
        wal_streams=len(wal.streams),
        wal_segments=sum(s.segments for s in wal.streams),
        index_objects=packs.index_objects if packs is not None else 0,
        packs=packs.packs if packs is not None else 0,
        unlisted_packs=packs.unlisted_packs if packs is not None else 0,
        packs_read=packs.packs_read if packs is not None else 0,
    )


def wal_problems(status: WalStatus) -> list[Problem]:
    """A ``wal`` problem per gap (naming the stream and the first missing segment) and
    per timeline whose ancestry cannot be known (its history file)."""
    problems = []
    for stream in status.streams:
        for gap in stream.gaps:
            message = (
                f"WAL stream {stream.stream} has a gap: segment {gap.first_missing} is "
                f"missing ({gap.missing} segment(s) missing after the base backup's start)"
            )
            problems.append(Problem("wal", stream.stream, message, gap.backup_ids))
        for why in stream.unsure:
            problems.append(Problem("wal", stream.stream, f"WAL stream {stream.stream}: {why}"))
    return problems


def _order_problems(repo: Repository, manifests: list[Manifest]) -> list[Problem]:
    """Each manifest's chunk list against the order recorded at backup time (needs the
    key; manifests written before it was recorded have none to check), and its private
    section (table statistics, the restore's verification) must open: a damaged one went
    unnoticed by check --read-data (fault campaign, seed 2030) until a restore needed it."""
    problems = []
    for m in manifests:
        try:
            repo.check_chunk_order(m)
        except IntegrityError as exc:
            if repo.storage.exists(manifest_key(m.backup_id)):  # not forgotten meanwhile
                problems.append(Problem("order", m.backup_id, exc.message, (m.backup_id,)))
        try:
            repo.private_section(m)
        except ManifestDamaged as exc:
            if repo.storage.exists(manifest_key(m.backup_id)):
                problems.append(Problem("manifest", m.backup_id, exc.message, (m.backup_id,)))
    return problems


def _log_problems(repo: Repository, workers: int) -> list[Problem]:
    """Every archived log file (``logs/``: WAL) must decrypt, decompress and match its
    name's digest (``repository/logs.py``); they are no chunks and no manifest lists them."""
    keys = list(repo.storage.list(LOGS_PREFIX))
    if not keys:
        return []
    archive = LogArchive(repo)
    files = {f.key: f for stream in {k.split("/")[1] for k in keys} for f in archive.files(stream)}

    def read(key: str) -> tuple[str, int, Problem | None]:
        try:
            return key, len(archive.read(files[key])), None
        except IntegrityError as exc:
            return key, 0, Problem("log", key, exc.message)
        except StrongroomError:  # vanished meanwhile: nothing to check
            return key, 0, None

    return [p for _, _, p in _parallel(read, sorted(files), workers) if p is not None]


def _parallel(
    work: Callable[[str], tuple[str, int, Problem | None]], items: list[str], workers: int
) -> list[tuple[str, int, Problem | None]]:
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-check") as pool:
        return list(pool.map(work, items))
