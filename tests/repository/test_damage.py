"""Every kind of damage to a fresh local repository, through the real command line: the
exit code is the documented one (3 repository, 4 key, 7 integrity), stderr holds exactly
one ``error:`` line naming the damaged object, and no traceback (issue 15, items 5-7)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom.repository.keys import KeySource
from strongroom.repository.pack_index import ChunkLocation
from strongroom.repository.repository import Repository
from strongroom.storage.local import LocalStorage
from tests.helpers import cli_fails, cli_ok, make_sqlite_db, repository_env, run_cli

DOCUMENTED = {3, 4, 7}


@dataclass(frozen=True)
class Template:
    root: Path  # holds repo/, repo.key, config/, shop.db
    old: str  # the older backup's id
    new: str  # the newer backup's id


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("damage-template")
    env = repository_env(root)
    cli_ok(run_cli("init", env=env))
    shop = make_sqlite_db(root / "shop.db", users=3000, orders=9000)
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "shop", env=env))
    make_sqlite_db(shop, users=30, orders=30, seed=8)
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "shop", env=env))
    old, new = (m["id"] for m in json.loads(cli_ok(run_cli("list", "--json", env=env))))
    manifest = json.loads((root / "repo" / "backups" / f"{new}.json").read_bytes())
    assert len({c[0] for c in manifest["chunks"]}) >= 3, "the test needs distinct chunks"
    return Template(root, old, new)


@dataclass
class Case:
    root: Path
    old: str
    new: str

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def env(self) -> dict[str, str]:
        return repository_env(self.root)

    def manifest_path(self, backup_id: str | None = None) -> Path:
        return self.repo / "backups" / f"{backup_id or self.new}.json"

    def manifest(self) -> dict[str, object]:
        return json.loads(self.manifest_path().read_bytes())  # type: ignore[no-any-return]

    def write_manifest(self, document: object) -> None:
        self.manifest_path().write_bytes(json.dumps(document).encode())

    def chunk_ids(self) -> list[str]:
        return [c[0] for c in self.manifest()["chunks"]]  # type: ignore[attr-defined, index]

    def location(self, chunk_id: str) -> ChunkLocation:
        """Where the index puts the chunk (backups write packs since issue 19)."""
        source = KeySource(key_file=self.root / "repo.key")
        with _cache_dir(self.root / "cache"):
            found = Repository.open(LocalStorage(self.repo), source).chunks.locate(chunk_id)
        assert found is not None
        return found

    def pack_path(self, chunk_id: str) -> Path:
        pack_id = self.location(chunk_id).pack_id
        return self.repo / "packs" / pack_id[:2] / pack_id

    def blob_span(self, chunk_id: str) -> tuple[int, int]:
        found = self.location(chunk_id)
        return found.offset, found.offset + found.length

    def config(self) -> dict[str, object]:
        return json.loads((self.repo / "config").read_bytes())  # type: ignore[no-any-return]

    def write_config(self, document: object) -> None:
        (self.repo / "config").write_bytes(json.dumps(document).encode())


@pytest.fixture()
def case(template: Template, tmp_path: Path) -> Case:
    root = tmp_path / "copy"
    shutil.copytree(template.root, root)
    return Case(root, template.old, template.new)


def _edit_config(edit: Callable[[dict[str, object]], None]) -> Callable[[Case], None]:
    def damage(c: Case) -> None:
        document = c.config()
        edit(document)
        c.write_config(document)

    return damage


def _edit_manifest(edit: Callable[[dict[str, object]], None]) -> Callable[[Case], None]:
    def damage(c: Case) -> None:
        document = c.manifest()
        edit(document)
        c.write_manifest(document)

    return damage


def _swap_chunks(document: dict[str, object]) -> None:
    chunks = document["chunks"]
    assert isinstance(chunks, list)
    first = next(i for i, c in enumerate(chunks) if c[0] != chunks[0][0] and c[1] != chunks[0][1])
    chunks[0], chunks[first] = chunks[first], chunks[0]


def _garbage_private(document: dict[str, object]) -> None:
    document["private"] = {"encoding": "age", "data": base64.b64encode(b"x" * 200).decode()}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nested(section: str, key: str, value: object) -> Callable[[dict[str, object]], None]:
    def edit(document: dict[str, object]) -> None:
        part = document[section]
        assert isinstance(part, dict)
        part[key] = value

    return edit


def _del(key: str) -> Callable[[dict[str, object]], None]:
    return lambda document: document.pop(key) and None


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda document: document.__setitem__(key, value)


def _last_chunks_pack(action: Callable[[Path], None]) -> Callable[[Case], None]:
    return lambda c: action(c.pack_path(c.chunk_ids()[-1]))


def _blob_garbage(c: Case) -> None:
    """Overwrite the last chunk's blob, in place, with bytes of the same length."""
    path, (start, end) = c.pack_path(c.chunk_ids()[-1]), c.blob_span(c.chunk_ids()[-1])
    data = path.read_bytes()
    path.write_bytes(data[:start] + b"z" * (end - start) + data[end:])


def _blob_of_another(c: Case) -> None:
    """Put the first chunk's blob where the last chunk's is (pack and offset of the last:
    the AAD binds a blob to its chunk id)."""
    first, last = c.chunk_ids()[0], c.chunk_ids()[-1]
    source = c.pack_path(first).read_bytes()
    start, end = c.blob_span(first)
    target = c.pack_path(last)
    data = bytearray(target.read_bytes())
    at, stop = c.blob_span(last)
    blob = source[start:end][: stop - at].ljust(stop - at, b"\0")
    data[at:stop] = blob
    target.write_bytes(bytes(data))


@contextlib.contextmanager
def _cache_dir(path: Path) -> Iterator[None]:
    old = os.environ.get("STRONGROOM_CACHE_DIR")
    os.environ["STRONGROOM_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["STRONGROOM_CACHE_DIR"]
        else:
            os.environ["STRONGROOM_CACHE_DIR"] = old


# kind -> (damage, command (NEW/OLD: the backups' ids), exit code, what the error names)
KINDS: dict[str, tuple[Callable[[Case], None], tuple[str, ...], int, str]] = {
    "config missing": (
        lambda c: (c.repo / "config").unlink(),
        ("list",),
        3,
        "no strongroom repository",
    ),
    "config truncated": (lambda c: _truncate(c.repo / "config"), ("list",), 3, "config"),
    "config not JSON": (
        lambda c: (c.repo / "config").write_bytes(b"\x00\xffgarbage"),
        ("list",),
        3,
        "config .* not valid JSON",
    ),
    "config of a newer version": (_edit_config(_set("version", 9)), ("list",), 3, "version 9"),
    "config without encryption": (
        _edit_config(_del("encryption")),
        ("list",),
        3,
        "config .* encryption",
    ),
    "config chunker out of range": (
        _edit_config(_nested("chunker", "min_size", 0)),
        ("list",),
        3,
        r"chunker\.min_size is 0, outside the allowed range 64 to",
    ),
    "config chunker avg above max": (
        _edit_config(_nested("chunker", "avg_size", 1 << 30)),
        ("verify", "NEW"),
        3,
        r"chunker\.avg_size",
    ),
    "config wrapped key bad base64": (
        _edit_config(_nested("hash", "key_wrapped", "not*base64!")),
        ("verify", "NEW"),
        3,
        r"hash\.key_wrapped is not valid base64",
    ),
    "config wrapped key garbage": (
        _edit_config(_nested("hash", "key_wrapped", base64.b64encode(b"y" * 90).decode())),
        ("verify", "NEW"),
        3,
        r"hash\.key_wrapped does not decrypt",
    ),
    "config recipients garbage": (
        _edit_config(_nested("encryption", "recipients", ["age1nope"])),
        ("list",),
        3,
        r"encryption\.recipients",
    ),
    "key file garbage": (
        lambda c: (c.root / "repo.key").write_text("just some text\n"),
        ("verify", "NEW"),
        4,
        "repo.key is not a key file",
    ),
    "key file binary": (
        lambda c: (c.root / "repo.key").write_bytes(b"\xff\xfe\x00" * 40),
        ("verify", "NEW"),
        4,
        "repo.key",
    ),
    "key file with a broken identity": (
        lambda c: (c.root / "repo.key").write_text("AGE-SECRET-KEY-1NOTAKEY\n"),
        ("verify", "NEW"),
        4,
        "repo.key does not hold a valid age identity",
    ),
    "key file missing": (
        lambda c: (c.root / "repo.key").unlink(),
        ("verify", "NEW"),
        4,
        "repo.key does not exist",
    ),
    "manifest not JSON": (
        lambda c: c.manifest_path().write_bytes(b"{not json"),
        ("verify", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged: it is not valid JSON",
    ),
    "manifest truncated": (
        lambda c: _truncate(c.manifest_path()),
        ("verify", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged",
    ),
    "manifest without its chunks": (
        _edit_manifest(_del("chunks")),
        ("verify", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged: field 'chunks' is missing",
    ),
    "manifest with a wrong type": (
        _edit_manifest(_set("raw_size", "lots")),
        ("show", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged: field 'raw_size'",
    ),
    "manifest naming ../../config": (
        _edit_manifest(_set("chunks", [["../../config", 10]])),
        ("verify", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged: it lists '\.\./\.\./config', which is not a chunk",
    ),
    "manifest of another backup": (
        _edit_manifest(_set("id", "20200101T000000Z-00000000")),
        ("verify", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged: it names backup",
    ),
    "manifest of a newer version": (
        _edit_manifest(_set("version", 2)),
        ("verify", "NEW"),
        3,
        r"manifest backups/NEW\.json has version 2",
    ),
    "manifest private section garbage": (
        _edit_manifest(_garbage_private),
        ("show", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged: its private section does not decrypt",
    ),
    "manifest private section not base64": (
        _edit_manifest(_set("private", {"encoding": "age", "data": "***"})),
        ("show", "NEW"),
        7,
        r"manifest backups/NEW\.json is damaged",
    ),
    "manifest chunks swapped": (
        _edit_manifest(_swap_chunks),
        ("verify", "NEW"),
        7,
        "backup NEW is damaged: its manifest's list of chunks",
    ),
    "manifest chunks swapped (check)": (
        _edit_manifest(_swap_chunks),
        ("check", "--read-data"),
        7,
        "backup NEW is damaged: its manifest's list of chunks",
    ),
    "manifest missing": (
        lambda c: c.manifest_path().unlink(),
        ("verify", "NEW"),
        3,
        "no backup 'NEW'",
    ),
    # chunks live in packs (issue 19): the damage is done to the pack holding the chunk
    "chunk's pack truncated": (
        _last_chunks_pack(_truncate),
        ("verify", "NEW"),
        7,
        "chunk [0-9a-f]{64}",
    ),
    "chunk's pack missing": (
        _last_chunks_pack(lambda p: p.unlink()),
        ("verify", "NEW"),
        7,
        "chunk [0-9a-f]{64} is missing",
    ),
    "chunk's pack garbage": (
        _last_chunks_pack(lambda p: p.write_bytes(b"z" * 500)),
        ("verify", "NEW"),
        7,
        "chunk [0-9a-f]{64} is damaged",
    ),
    "chunk's blob garbage": (_blob_garbage, ("verify", "NEW"), 7, "chunk [0-9a-f]{64} is damaged"),
    "chunk's blob replaced by another's": (
        _blob_of_another,
        ("verify", "NEW"),
        7,
        "chunk [0-9a-f]{64} is damaged",
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_damage_exits_with_its_code_and_one_line_naming_it(case: Case, kind: str) -> None:
    damage, command, code, pattern = KINDS[kind]
    damage(case)
    args = [arg.replace("NEW", case.new).replace("OLD", case.old) for arg in command]
    result = run_cli(*args, env=case.env)
    assert code in DOCUMENTED
    cli_fails(result, code, pattern.replace("NEW", case.new))


def test_every_kind_is_one_of_at_least_fifteen() -> None:
    assert len(KINDS) >= 15
    assert {code for _, _, code, _ in KINDS.values()} <= DOCUMENTED


# --- one damaged manifest does not break the others (item 5) ---------------------------
def test_a_damaged_manifest_is_listed_as_damaged_and_the_others_keep_working(
    case: Case,
) -> None:
    case.manifest_path().write_bytes(b"{truncated")
    env = case.env
    listed = run_cli("list", env=env)
    out = cli_ok(listed)
    assert case.old in out and case.new in out and "damaged:" in out
    assert "not valid JSON" in out
    entries = json.loads(cli_ok(run_cli("list", "--json", env=env)))
    by_id = {e["id"]: e for e in entries}
    assert by_id[case.old]["target"] == "shop" and "damaged" not in by_id[case.old]
    assert by_id[case.new]["status"] == "damaged" and "not valid JSON" in by_id[case.new]["damaged"]

    every = run_cli("verify", "--all", env=env)
    assert f"ok       {case.old}" in every.stdout.decode()
    cli_fails(every, 7, f"1 manifest\\(s\\) damaged, not verified: manifest backups/{case.new}")

    # restore latest passes over the damaged (newest) manifest, with a warning
    target = case.root / "restored.db"
    restored = run_cli(
        "restore", "latest", "--target", "shop", "--to", f"sqlite://{target}", "--yes", env=env
    )
    cli_ok(restored)
    assert f"left out backup {case.new}" in restored.stderr.decode()
    assert case.old in restored.stdout.decode()
    count = sqlite3.connect(target).execute("SELECT count(*) FROM users").fetchone()[0]
    assert count == 3000  # the older backup's rows

    # forget keeps it (it cannot be dated) and says so; the healthy ones are decided
    forgot = run_cli("forget", "--keep-last", "1", env=env)
    cli_ok(forgot)
    assert f"kept backup {case.new}" in forgot.stderr.decode()
    assert case.manifest_path().exists()
    assert case.manifest_path(case.old).exists()  # the only readable one: the last kept


def test_a_healthy_backup_restores_by_id_beside_a_damaged_one(case: Case) -> None:
    case.manifest_path(case.old).write_bytes(b"\x00garbage")
    target = case.root / "by-id.db"
    cli_ok(run_cli("restore", case.new, "--to", f"sqlite://{target}", "--yes", env=case.env))
    count = sqlite3.connect(target).execute("SELECT count(*) FROM users").fetchone()[0]
    assert count == 3030


def test_a_manifest_that_names_a_chunk_outside_chunks_reads_nothing_there(case: Case) -> None:
    secret = case.root / "outside"
    secret.write_bytes(b"not for strongroom")
    _edit_manifest(_set("chunks", [["../../outside", 18]]))(case)
    result = run_cli("cat", case.new, env=case.env)
    cli_fails(result, 7, f"manifest backups/{case.new}.json is damaged")
    assert result.stdout == b""


# --- names and tags are checked before anything is written (item 6) -------------------
@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--target", "../../etc", "target name '../../etc' is not allowed"),
        ("--target", "shop/x", "'/'"),
        ("--target", "..", "starts with '.'"),
        ("--target", "x" * 129, "129 characters long"),
        ("--target", "bell\x07", "control"),
        ("--tag", "t" * 65, "65 characters long"),
        ("--tag", "new\nline", "control"),
        ("--tag", "a,b", "','"),
    ],
)
def test_bad_target_names_and_tags_are_refused_before_anything_is_written(
    case: Case, option: str, value: str, says: str
) -> None:
    before = sorted(p.relative_to(case.repo) for p in case.repo.rglob("*"))
    shop = case.root / "shop.db"
    result = run_cli("backup", f"sqlite://{shop}", option, value, env=case.env)
    err = cli_fails(result, 2, _escape(says))
    assert ("error: tag " if option == "--tag" else "error: target name ") in err
    assert sorted(p.relative_to(case.repo) for p in case.repo.rglob("*")) == before


def test_a_huge_tag_and_too_many_tags_are_refused(case: Case) -> None:
    shop = case.root / "shop.db"
    huge = run_cli("backup", f"sqlite://{shop}", "--tag", "x" * 100_000, env=case.env)
    err = cli_fails(huge, 2, "100000 characters long")
    assert len(err) < 400
    many = [arg for i in range(17) for arg in ("--tag", f"t{i}")]
    cli_fails(run_cli("backup", f"sqlite://{shop}", *many, env=case.env), 2, "at most 16 tags")


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_verify_notices_a_private_section_that_does_not_open(case: Case) -> None:
    """A read check of a backup whose private section (tables and their statistics, which
    a restore verifies against) is damaged fails, exit 7 naming the manifest: such a
    backup cannot restore, so `verify --all` must not call it fine (found by the fault
    campaign)."""
    _edit_manifest(_garbage_private)(case)
    result = run_cli("verify", "--all", env=case.env)
    assert result.returncode == 7, result.stderr.decode() + result.stdout.decode()
    assert case.new in result.stderr.decode() + result.stdout.decode()
