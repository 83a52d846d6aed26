"""A hostile user's and a newcomer's attacks on the damage handling of issue 15 (items
5-7): manifests of every wrong shape, names that try to take over the terminal or Rich's
markup, names that look alike, a repository whose every backup of a target is damaged.
Each case once failed (exit 70, a raw escape on the terminal, two targets that look the
same) or guards what already held; cases outside this change's files are ``xfail``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from strongroom.errors import BackupForgotten, ManifestDamaged
from strongroom.pipeline.hashing import StreamChecksum
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import chunk_key, manifest_key
from strongroom.repository.manifest import (
    STATUS_COMPLETE,
    ChunkRef,
    Manifest,
    PrivateSection,
    seal_private,
)
from strongroom.repository.names import check_tags, check_target_name, printable
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage
from tests.helpers import cli_fails, cli_ok, make_sqlite_db, repository_env, run_cli

BID = "20261121T120000Z-0000000b"
ESC = "\x1b"
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


# --- in process: the manifest parser ---------------------------------------------------
def _manifest(backup_id: str = BID, target: str = "shop", chunks: int = 3) -> Manifest:
    refs = tuple(ChunkRef(f"{i:064x}", 10) for i in range(chunks))
    return Manifest(
        backup_id=backup_id,
        target=target,
        engine="sqlite",
        engine_version="3",
        tool_version="sqlite3",
        dump_format="sqlite3-database",
        started_at="2026-11-21T12:00:00.000Z",
        finished_at="2026-11-21T12:00:01.000Z",
        duration_seconds=1.0,
        tags=("daily",),
        status=STATUS_COMPLETE,
        created_by="test@host",
        raw_size=10 * chunks,
        stored_new_bytes=1,
        new_chunk_count=chunks,
        stream_checksum="0" * 64,
        chunks=refs,
        private_sealed={"encoding": "plain", "data": {"database": "shop", "tables": []}},
    )


def _document(**changes: object) -> bytes:
    document = json.loads(_manifest().to_json())
    document.update(changes)
    return json.dumps(document).encode()


BIG = "9" * 5000  # more digits than Python converts by default (a ValueError, not JSON's)
SHAPES: dict[str, bytes] = {
    "a JSON list": b"[]",
    "a JSON number": b"5",
    "JSON null": b"null",
    "a JSON string": b'"manifest"',
    "zero bytes": b"",
    "nested 100000 deep": b"[" * 100_000,
    "a 5000-digit count": _document(raw_size=0).replace(
        b'"raw_size": 0', b'"raw_size": ' + BIG.encode()
    ),
    "a 5000-digit chunk size": _document(chunks=[["a" * 64, 0]]).replace(
        b", 0]]", b", " + BIG.encode() + b"]]"
    ),
    "duration NaN": _document(duration_seconds=float("nan")),
    "duration Infinity": _document(duration_seconds=float("inf")),
    "duration negative": _document(duration_seconds=-1),
    "a count of 10**30": _document(raw_size=10**30),
    "a chunk size of 2**64": _document(chunks=[["a" * 64, 2**64]]),
    "chunk_order a number": _document(chunk_order=5),
    "chunk_order a list in hex": _document(chunk_order={"hex": [1]}),
    "chunk_order short text": _document(chunk_order="abc"),
    "chunks a dict": _document(chunks={"a": 1}),
    "a chunk as a string pair": _document(chunks=["ab"]),
    "a chunk id in capitals": _document(chunks=[["A" * 64, 1]]),
    "a chunk id with a newline": _document(chunks=[["a" * 63 + "\n", 1]]),
    "a chunk size true": _document(chunks=[["a" * 64, True]]),
    "tags a string": _document(tags="daily"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_wrong_shape_of_manifest_is_damage_naming_it(shape: str) -> None:
    with pytest.raises(ManifestDamaged) as caught:
        Manifest.from_json(SHAPES[shape], f"backups/{BID}.json", BID)
    message = caught.value.message
    assert message.startswith(f"manifest backups/{BID}.json is damaged: ")
    assert message.isprintable() and len(message) < 300, message
    assert caught.value.exit_code == 7 and caught.value.backup_id == BID


def test_a_whole_manifest_still_parses_and_keeps_its_chunks_in_order() -> None:
    manifest = _manifest(chunks=500)
    assert Manifest.from_json(manifest.to_json(), "here", BID) == manifest


@pytest.mark.parametrize(
    "changes",
    [
        {"id": f"{ESC}[2J\nerror: everything is fine"},
        {"version": f"{ESC}]0;pwned\x07"},
        {"chunks": [[f"{ESC}[31m\u202e", 1]]},
    ],
)
def test_a_damage_message_quotes_no_control_character(changes: dict[str, object]) -> None:
    """A faked second ``error:`` line or a terminal escape read from a manifest is shown
    as an escape, never written to the terminal."""
    with pytest.raises(Exception) as caught:  # ManifestDamaged, or UnsupportedFormat
        Manifest.from_json(_document(**changes), f"backups/{BID}.json", BID)
    message = str(caught.value)
    assert ESC not in message and "\n" not in message and "\u202e" not in message
    assert "\\x1b" in message


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable("shop") == "shop" and printable("ünï ☃ [/]") == "ünï ☃ [/]"
    shown = printable(f"a{ESC}]0;x\x07b\nc\u202e\ud800")
    assert shown == "a\\x1b]0;x\\x07b\\nc\\u202e\\ud800" and shown.isprintable()


# --- in process: names that look alike ----------------------------------------------
def test_names_and_tags_are_stored_in_one_unicode_form() -> None:
    assert NFC != NFD
    assert check_target_name(NFD) == NFC == check_target_name(NFC)
    assert check_tags([NFD]) == (NFC,)


@pytest.fixture()
def memory_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _write(repo: Repository, backup_id: str, target: str, parts: tuple[bytes, ...]) -> Manifest:
    refs = []
    checksum = StreamChecksum()
    for part in parts:
        chunk_id = repo.chunks.name(part)
        repo.chunks.store(chunk_id, part)
        refs.append(ChunkRef(chunk_id, len(part)))
        checksum.update(part)
    private = PrivateSection("shop", "sqlite:///shop.db", [])
    manifest = replace(
        _manifest(backup_id, target),
        chunks=tuple(refs),
        raw_size=sum(map(len, parts)),
        stream_checksum=checksum.hexdigest(),
        private_sealed=seal_private(private, repo.keyring.sealer(for_reading=False)),
        chunk_order=repo.chunk_order(tuple(refs)),
    )
    repo.write_manifest(manifest)
    return manifest


def test_a_target_written_by_an_older_version_in_nfd_is_found_by_either_spelling(
    memory_repo: Repository,
) -> None:
    _write(memory_repo, BID, NFD, (b"x" * 100,))
    for spelling in (NFC, NFD):
        assert [m.backup_id for m in memory_repo.list_backups(spelling)] == [BID]
        assert memory_repo.resolve("latest", spelling).backup_id == BID


def test_verify_all_passes_over_a_backup_forgotten_mid_run(
    memory_repo: Repository, capsys: pytest.CaptureFixture[str]
) -> None:
    from strongroom.cli.verify_cmd import _read_all

    gone = _write(memory_repo, "20261121T110000Z-0000000a", "shop", (b"gone " * 40,))
    kept = _write(memory_repo, BID, "shop", (b"kept " * 40,))
    manifests = memory_repo.list_backups()
    assert [m.backup_id for m in manifests] == [gone.backup_id, kept.backup_id]
    memory_repo.storage.delete(manifest_key(gone.backup_id))  # forget + prune, meanwhile
    memory_repo.storage.delete(chunk_key(gone.chunks[0].chunk_id))
    _read_all(memory_repo, manifests)  # no error: nothing is damaged
    out, err = capsys.readouterr()
    assert f"ok       {kept.backup_id}" in out and "recorded 1 read check(s)" in out
    assert f"gone     {gone.backup_id}: backup {gone.backup_id} was forgotten" in err
    with pytest.raises(BackupForgotten):
        _read_all(memory_repo, [gone], single=True)  # verify ID: says so, exit 3


# --- through the command line ---------------------------------------------------------
@dataclass(frozen=True)
class Template:
    root: Path
    old: str
    new: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("attack-template")
    env = repository_env(root)
    cli_ok(run_cli("init", env=env))
    shop = make_sqlite_db(root / "shop.db", users=200, orders=400)
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "shop", env=env))
    # backup ids name the second: two backups in one second order by their random part,
    # so "newest" (read from ids when a manifest is damaged) would be a coin toss
    time.sleep(1.05 - time.time() % 1)
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", "shop", env=env))
    old, new = (m["id"] for m in json.loads(cli_ok(run_cli("list", "--json", env=env))))
    return Template(root, old, new)


@dataclass
class Case:
    root: Path
    old: str
    new: str

    @property
    def env(self) -> dict[str, str]:
        return repository_env(self.root)

    def manifest_path(self, backup_id: str) -> Path:
        return self.root / "repo" / "backups" / f"{backup_id}.json"

    def edit(self, backup_id: str, **changes: object) -> None:
        path = self.manifest_path(backup_id)
        document = json.loads(path.read_bytes())
        document.update(changes)
        path.write_bytes(json.dumps(document).encode())


@pytest.fixture()
def case(template: Template, tmp_path: Path) -> Case:
    shutil.copytree(template.root, tmp_path / "copy")
    return Case(tmp_path / "copy", template.old, template.new)


HOSTILE_TARGET = f"[/x]{ESC}]0;pwned\x07{ESC}[2J\ud800"
HOSTILE_TAGS = ["[/]", f"{ESC}[31mred", "[link=https://evil.example]click"]


def test_names_from_an_older_manifest_are_shown_never_obeyed(case: Case) -> None:
    """An older version wrote any target and tags: ``list``, ``show`` and ``verify --all``
    once exited 70 (Rich markup ``[/]``, a lone surrogate) or wrote ESC to the terminal."""
    case.edit(case.new, target=HOSTILE_TARGET, tags=HOSTILE_TAGS)
    for command in (("list",), ("show", case.new), ("verify", "--all")):
        result = run_cli(*command, env=case.env)
        out = cli_ok(result) + result.stderr.decode()
        assert ESC not in out and "\x07" not in out, command
        assert "[/x]\\x1b]0;pwned\\x07\\x1b[2J\\ud800" in out, (command, out)
    listed = cli_ok(run_cli("list", env=case.env))
    assert "[/],\\x1b[31mred,[link=https://evil.example]click" in listed
    entries = json.loads(cli_ok(run_cli("list", "--json", env=case.env)))
    assert entries[1]["target"] == HOSTILE_TARGET and entries[1]["tags"] == HOSTILE_TAGS


def test_a_tag_that_looks_like_markup_is_listed_as_it_is(case: Case) -> None:
    """``[/]`` is an allowed tag; it made every later ``list`` exit 70."""
    shop = case.root / "shop.db"
    cli_ok(
        run_cli("backup", f"sqlite://{shop}", "--target", "[shop]", "--tag", "[/]", env=case.env)
    )
    listed = cli_ok(run_cli("list", env=case.env))
    assert "[shop]" in listed and "[/]" in listed
    cli_ok(run_cli("show", "latest", env=case.env))
    cli_ok(run_cli("list", "--target", "[/]", env=case.env))  # "no backups of target '[/]'"


def test_forget_lists_a_markup_tag_as_it_is(case: Case) -> None:
    case.edit(case.new, tags=["[/]"])
    cli_ok(run_cli("forget", "--keep-last", "1", "--dry-run", env=case.env))


def test_a_table_named_like_markup_restores(case: Case) -> None:
    source = case.root / "odd.db"
    db = sqlite3.connect(source)
    db.execute('CREATE TABLE "[/]" (x)')
    db.execute('INSERT INTO "[/]" VALUES (1)')
    db.commit()
    db.close()
    cli_ok(run_cli("backup", f"sqlite://{source}", "--target", "odd", env=case.env))
    cli_ok(run_cli("show", "latest", env=case.env))  # this one is fixed
    into = case.root / "odd-restored.db"
    cli_ok(
        run_cli(
            "restore",
            "latest",
            "--target",
            "odd",
            "--to",
            f"sqlite://{into}",
            "--yes",
            env=case.env,
        )
    )


def test_a_5000_digit_number_in_a_manifest_is_damage_not_a_crash(case: Case) -> None:
    path = case.manifest_path(case.new)
    text = path.read_text()
    path.write_text(text.replace('"raw_size":', f'"raw_size":{BIG},"x":', 1))
    listed = cli_ok(run_cli("list", env=case.env))
    assert case.old in listed and "damaged: manifest" in listed
    cli_fails(run_cli("show", case.new, env=case.env), 7, f"manifest backups/{case.new}.json")


def test_when_every_backup_of_a_target_is_damaged_restore_latest_says_so(case: Case) -> None:
    """Not "there is no backup" (exit 3): the backups are there, damaged (exit 7)."""
    case.edit(case.old, duration_seconds="long")
    case.manifest_path(case.new).write_bytes(b"{garbage")
    into = case.root / "restored.db"
    restore = run_cli(
        "restore", "latest", "--target", "shop", "--to", f"sqlite://{into}", "--yes", env=case.env
    )
    cli_fails(
        restore,
        7,
        f"there is no readable backup of target 'shop': 2 damaged manifest\\(s\\); the newest: "
        f"manifest backups/{case.new}.json is damaged",
    )
    assert not into.exists()
    cli_fails(run_cli("verify", "latest", env=case.env), 7, "there is no readable backup: 2")


def test_the_newest_damaged_backup_is_passed_over_by_restore_latest(case: Case) -> None:
    case.manifest_path(case.new).write_bytes(b"[]")
    into = case.root / "restored.db"
    restored = run_cli(
        "restore", "latest", "--target", "shop", "--to", f"sqlite://{into}", "--yes", env=case.env
    )
    assert case.old in cli_ok(restored)
    assert f"left out backup {case.new}" in restored.stderr.decode()


def test_names_differing_only_in_unicode_form_are_one_target(case: Case) -> None:
    shop = case.root / "shop.db"
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", NFD, env=case.env))
    cli_ok(run_cli("backup", f"sqlite://{shop}", "--target", NFC, "--tag", NFD, env=case.env))
    entries = json.loads(cli_ok(run_cli("list", "--json", "--target", NFD, env=case.env)))
    assert [e["target"] for e in entries] == [NFC, NFC] and entries[1]["tags"] == [NFC]
    assert sorted(p.name for p in (case.root / "repo" / "runs").iterdir()) == sorted({"shop", NFC})


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        ("x" * 128, 0, ""),
        ("-looks-like-an-option", 0, ""),
        ("", 2, "it is empty"),
        ("shop ", 2, "space"),
    ],
)
def test_target_names_at_the_edges_of_the_rules(
    case: Case, value: str, code: int, says: str
) -> None:
    shop = case.root / "shop.db"
    result = run_cli("backup", f"sqlite://{shop}", f"--target={value}", env=case.env)
    if code == 0:
        cli_ok(result)
        entries = json.loads(cli_ok(run_cli("list", "--json", "--target", value, env=case.env)))
        assert [e["target"] for e in entries] == [value]
    else:
        cli_fails(result, code, says)


# --- the same damage on S3 (moto), in process -----------------------------------------
def test_damaged_manifests_on_s3_are_listed_as_damaged(
    s3_bucket: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strongroom.storage.factory import open_storage

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/repo", endpoint)
    Repository.init(storage, key_file=tmp_path / "k")
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    ids = [f"20261121T12000{i}Z-0000000{i}" for i in range(5)]
    for backup_id in ids:
        _write(repo, backup_id, "shop", (backup_id.encode() * 10,))
    damages = {ids[0]: b"[]", ids[1]: b"", ids[2]: b"null", ids[3]: _document(id=ids[2])}
    for backup_id, raw in damages.items():
        storage.put(manifest_key(backup_id), raw)
    repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
    listing = repo.scan_backups("shop")
    assert [m.backup_id for m in listing.backups] == [ids[4]]
    assert [d.backup_id for d in listing.damaged] == ids[:4]
    assert all(
        f"manifest backups/{d.backup_id}.json is damaged" in d.reason for d in listing.damaged
    )
    assert repo.resolve("latest", "shop").backup_id == ids[4]
    storage.delete(manifest_key(ids[4]))
    with pytest.raises(ManifestDamaged, match=f"the newest: manifest backups/{ids[3]}.json"):
        repo.resolve("latest", "shop")


# --- the web API --------------------------------------------------------------------------
def test_the_web_api_refuses_a_bad_tag_at_once(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.web.conftest import build_app

    db = make_sqlite_db(tmp_path / "shop.db", users=20, orders=20)
    web = build_app(tmp_path, {"shop": f"sqlite://{db}"})
    with TestClient(web.app) as client:
        response = client.post(
            "/api/backups", json={"target": "shop", "tags": ["a,b"]}, headers=web.admin
        )
    assert response.status_code == 422, response.text
