import base64
import json
import logging
import stat

import pytest

from strongroom.errors import (
    BackupForgotten,
    BackupNotFound,
    ChunkMissing,
    IntegrityError,
    KeyMissing,
    ManifestDamaged,
    RepositoryAlreadyInitialised,
    RepositoryDamaged,
    RepositoryNotInitialised,
    UsageError,
    WrongKey,
)
from strongroom.pipeline.chunking import ChunkerParams
from strongroom.pipeline.encryption import AgeSealer
from strongroom.pipeline.hashing import StreamChecksum
from strongroom.repository.config import ENCRYPTION_NONE
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import chunk_key
from strongroom.repository.manifest import (
    STATUS_COMPLETE,
    ChunkRef,
    Manifest,
    PrivateSection,
    TableRecord,
    seal_private,
)
from strongroom.repository.repository import Repository
from strongroom.storage.memory import MemoryStorage


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def test_init_writes_a_0600_key_file_and_a_config_without_secrets(home):
    storage = MemoryStorage()
    key = home / "repo.key"
    result = Repository.init(storage, key_file=key)
    assert result.key_file == key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    identity_line = next(line for line in key.read_text().splitlines() if line.startswith("AGE-"))
    config = storage.get("config")
    assert identity_line.encode() not in config
    document = json.loads(config)
    assert document["encryption"]["recipients"] == [result.public_key]
    assert "key" not in document["hash"]  # only the wrapped form
    repo = Repository.open(storage, KeySource(key_file=key))
    assert len(repo.keyring.hash_key()) == 32


def test_init_twice_is_refused_and_key_files_are_never_overwritten(home):
    storage = MemoryStorage()
    key = home / "k"
    Repository.init(storage, key_file=key)
    before = key.read_text()
    with pytest.raises(RepositoryAlreadyInitialised):
        Repository.init(storage, key_file=key)
    with pytest.raises(Exception, match="already exists"):
        Repository.init(MemoryStorage(), key_file=key)
    assert key.read_text() == before


def test_default_key_location_is_found_without_options(home):
    storage = MemoryStorage()
    result = Repository.init(storage)
    assert result.key_file is not None
    assert str(result.key_file).startswith(str(home / "config"))
    repo = Repository.open(storage, KeySource())
    repo.keyring.identity()


def test_opening_needs_an_initialised_repository():
    with pytest.raises(RepositoryNotInitialised, match="strongroom init"):
        Repository.open(MemoryStorage(), KeySource())


def test_wrong_key_file_is_refused_clearly(home):
    storage = MemoryStorage()
    Repository.init(storage, key_file=home / "right")
    Repository.init(MemoryStorage(), key_file=home / "other")
    repo = Repository.open(storage, KeySource(key_file=home / "other"))
    with pytest.raises(WrongKey, match="does not open this repository"):
        repo.keyring.hash_key()
    (home / "garbage").write_text("hello\n")
    repo = Repository.open(storage, KeySource(key_file=home / "garbage"))
    with pytest.raises(WrongKey, match="not a key file"):
        repo.keyring.identity()
    repo = Repository.open(storage, KeySource(key_file=home / "missing"))
    with pytest.raises(KeyMissing, match="does not exist"):
        repo.keyring.identity()


def test_missing_key_is_reported_with_the_options_to_give_it(home):
    storage = MemoryStorage()
    Repository.init(storage, key_file=home / "k")
    repo = Repository.open(storage, KeySource())
    with pytest.raises(KeyMissing, match="--key-file"):
        repo.keyring.identity()


def test_passphrase_repository_opens_with_the_passphrase_only(home):
    storage = MemoryStorage()
    result = Repository.init(storage, passphrase="correct horse battery")
    assert result.key_file is None
    assert storage.exists("keys/identity.age")
    repo = Repository.open(storage, KeySource(passphrase="correct horse battery"))
    assert len(repo.keyring.hash_key()) == 32
    wrong = Repository.open(storage, KeySource(passphrase="wrong horse battery"))
    with pytest.raises(WrongKey, match="wrong passphrase"):
        wrong.keyring.identity()


def test_unencrypted_repository_needs_no_key(home):
    storage = MemoryStorage()
    Repository.init(storage, encryption=ENCRYPTION_NONE)
    repo = Repository.open(storage, KeySource())
    assert not repo.config.encrypted
    assert repo.chunks.load(_store(repo, b"plain")) == b"plain"


def _store(repo, data):
    chunk_id = repo.chunks.name(data)
    repo.chunks.store(chunk_id, data)
    return chunk_id


def test_unknown_backup_ids_are_reported(home):
    storage = MemoryStorage()
    Repository.init(storage, key_file=home / "k")
    repo = Repository.open(storage, KeySource(key_file=home / "k"))
    with pytest.raises(BackupNotFound):
        repo.resolve("20990101T000000Z-deadbeef")
    with pytest.raises(BackupNotFound, match="no backup"):
        repo.resolve("latest")


# --- damaged manifests, chunk order, forgotten backups (issue 15, items 5-7) -----------
def _backup(repo, backup_id, parts, target="shop", finished="2026-11-21T12:00:00.000Z"):
    """Store ``parts`` as chunks and write a manifest listing them in order."""
    refs = tuple(ChunkRef(_store(repo, part), len(part)) for part in parts)
    checksum = StreamChecksum()
    for part in parts:
        checksum.update(part)
    private = PrivateSection("shop", "sqlite:///shop.db", [TableRecord("users", 3)])
    manifest = Manifest(
        backup_id=backup_id,
        target=target,
        engine="sqlite",
        engine_version="3",
        tool_version="sqlite3",
        dump_format="sqlite3-database",
        started_at=finished,
        finished_at=finished,
        duration_seconds=1.0,
        tags=(),
        status=STATUS_COMPLETE,
        created_by="test@host",
        raw_size=sum(len(p) for p in parts),
        stored_new_bytes=1,
        new_chunk_count=len(refs),
        stream_checksum=checksum.hexdigest(),
        chunks=refs,
        private_sealed=seal_private(private, repo.keyring.sealer(for_reading=False)),
        chunk_order=repo.chunk_order(refs),
    )
    repo.write_manifest(manifest)
    return manifest


@pytest.fixture()
def keyed(home):
    storage = MemoryStorage()
    Repository.init(storage, key_file=home / "k")
    return Repository.open(storage, KeySource(key_file=home / "k"))


OLD_ID = "20261121T110000Z-0000000a"
NEW_ID = "20261121T120000Z-0000000b"
PARTS = (b"first part " * 50, b"second part " * 70, b"third " * 90)


def _reopen(repo):
    return Repository.open(repo.storage, repo.keyring._source)


def _rewrite(repo, backup_id, edit):
    key = f"backups/{backup_id}.json"
    document = json.loads(repo.storage.get(key))
    edit(document)
    repo.storage.put(key, json.dumps(document).encode())
    return _reopen(repo)


def test_the_chunk_order_is_recorded_and_round_trips(keyed):
    manifest = _backup(keyed, NEW_ID, PARTS)
    stored = json.loads(keyed.storage.get(f"backups/{NEW_ID}.json"))
    assert stored["chunk_order"] == {"algorithm": "blake3-keyed", "hex": manifest.chunk_order}
    again = _reopen(keyed).load_manifest(NEW_ID)
    assert again == manifest
    assert b"".join(_reopen(keyed).read_stream(again)) == b"".join(PARTS)


def test_swapped_chunks_fail_before_a_byte_is_read(keyed):
    _backup(keyed, NEW_ID, PARTS)
    repo = _rewrite(keyed, NEW_ID, lambda d: d["chunks"].reverse())
    swapped = repo.load_manifest(NEW_ID)
    stream = repo.read_stream(swapped)
    with pytest.raises(IntegrityError, match=f"backup {NEW_ID} is damaged: its manifest's list"):
        next(stream)
    assert repo.stream_problem(swapped) is None  # checked up front: no second read needed


def test_a_manifest_without_the_chunk_order_stays_readable(keyed):
    _backup(keyed, OLD_ID, PARTS)
    repo = _rewrite(keyed, OLD_ID, lambda d: d.pop("chunk_order"))
    old = repo.load_manifest(OLD_ID)
    assert old.chunk_order is None
    assert b"".join(repo.read_stream(old)) == b"".join(PARTS)
    assert repo.stream_problem(old) is None
    swapped = _rewrite(repo, OLD_ID, lambda d: d["chunks"].reverse())
    problem = swapped.stream_problem(swapped.load_manifest(OLD_ID))
    assert problem is not None and "whole-stream checksum" in problem.message


def test_a_chunk_of_another_size_than_recorded_is_damage(keyed):
    _backup(keyed, NEW_ID, PARTS)
    repo = _rewrite(
        keyed, NEW_ID, lambda d: d.pop("chunk_order") and d["chunks"][1].__setitem__(1, 5)
    )
    with pytest.raises(IntegrityError, match="holds 840 bytes, its manifest records 5"):
        b"".join(repo.read_stream(repo.load_manifest(NEW_ID)))


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.__setitem__("chunks", [["../../config", 3]]), "which is not a chunk id"),
        (lambda d: d.__setitem__("chunks", [["AB" * 32, 3]]), "which is not a chunk id"),
        (lambda d: d.__setitem__("chunks", [["ab" * 32]]), "is not \\[chunk id, size\\]"),
        (lambda d: d.__setitem__("chunks", [["ab" * 32, -1]]), "has no valid size"),
        (lambda d: d.__setitem__("chunk_order", {"hex": "nope"}), "'chunk_order'"),
        (lambda d: d.__setitem__("started_at", "yesterday"), "'started_at' is not a time"),
        (lambda d: d.__setitem__("tags", [1, 2]), "'tags' is not a list of text"),
        (lambda d: d.__setitem__("private", {"encoding": "rot13"}), "no known encoding"),
        (lambda d: d.pop("target"), "'target' is missing"),
        (lambda d: d.__setitem__("id", OLD_ID), f"names backup {OLD_ID}"),
    ],
)
def test_damaged_manifests_are_named_and_exit_7(keyed, edit, says):
    _backup(keyed, NEW_ID, PARTS)
    repo = _rewrite(keyed, NEW_ID, edit)
    with pytest.raises(
        ManifestDamaged, match=f"manifest backups/{NEW_ID}.json is damaged: .*{says}"
    ) as caught:
        repo.load_manifest(NEW_ID)
    assert caught.value.exit_code == 7 and caught.value.backup_id == NEW_ID


def test_chunk_keys_are_only_built_for_chunk_ids():
    assert chunk_key("ab" * 32) == f"chunks/ab/{'ab' * 32}"
    for bad in ("../../config", "ab", "AB" * 32, "ab" * 32 + "/x"):
        with pytest.raises(IntegrityError, match="is not a chunk id"):
            chunk_key(bad)


def test_a_damaged_manifest_is_left_out_of_listings_and_latest_with_a_warning(keyed, caplog):
    old = _backup(keyed, OLD_ID, PARTS[:1])
    _backup(keyed, NEW_ID, PARTS, finished="2026-11-21T13:00:00.000Z")
    repo = _rewrite(keyed, NEW_ID, lambda d: d.pop("chunks"))
    listing = repo.scan_backups()
    assert listing.backups == [old]
    (damaged,) = listing.damaged
    assert damaged.backup_id == NEW_ID and damaged.target == "shop"
    assert "field 'chunks' is missing" in damaged.reason
    assert repo.scan_backups("blog").damaged == []  # its text still names its target
    with caplog.at_level(logging.WARNING, "strongroom.repository"):
        assert repo.resolve("latest") == old
        assert repo.list_backups("shop") == [old]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"left out backup {NEW_ID}: {damaged.reason}"]  # once
    with pytest.raises(ManifestDamaged):
        repo.resolve(NEW_ID)
    garbage = _reopen(repo)
    garbage.storage.put(f"backups/{NEW_ID}.json", b"\xff\x00")
    (unknown,) = garbage.scan_backups("blog").damaged  # no target known: shown for every one
    assert unknown.target is None and "not valid JSON" in unknown.reason


def test_private_section_damage_is_not_blamed_on_the_key(keyed, home):
    manifest = _backup(keyed, NEW_ID, PARTS)
    assert keyed.private_section(manifest).tables == [TableRecord("users", 3)]
    garbage = base64.b64encode(AgeSealer([keyed.config.recipients[0]], None).seal(b"x")[:-8])
    repo = _rewrite(keyed, NEW_ID, lambda d: d["private"].__setitem__("data", garbage.decode()))
    with pytest.raises(ManifestDamaged, match="private section does not decrypt") as caught:
        repo.private_section(repo.load_manifest(NEW_ID))
    assert caught.value.exit_code == 7
    bad = _rewrite(repo, NEW_ID, lambda d: d["private"].__setitem__("data", "%%%"))
    with pytest.raises(ManifestDamaged, match="private section is not readable"):
        bad.private_section(bad.load_manifest(NEW_ID))
    # a key that does not open the repository is still the key's fault (exit 4)
    Repository.init(MemoryStorage(), key_file=home / "other")
    other = Repository.open(keyed.storage, KeySource(key_file=home / "other"))
    with pytest.raises(WrongKey):
        other.private_section(manifest)


def test_a_backup_forgotten_while_it_is_read_is_not_called_damaged(keyed):
    manifest = _backup(keyed, NEW_ID, PARTS)
    keyed.storage.delete(f"backups/{NEW_ID}.json")
    keyed.storage.delete(chunk_key(manifest.chunks[1].chunk_id))
    with pytest.raises(BackupForgotten, match=f"backup {NEW_ID} was forgotten") as caught:
        b"".join(keyed.read_stream(manifest))
    assert caught.value.exit_code == 3
    keyed.write_manifest(manifest)  # still listed: the missing chunk is damage
    with pytest.raises(ChunkMissing):
        b"".join(keyed.read_stream(manifest))


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda d: d["chunker"].__setitem__("min_size", 0),
            r"chunker\.min_size is 0, outside the allowed range 64 to 1048576",
        ),
        (
            lambda d: d["chunker"].__setitem__("max_size", "big"),
            r"chunker\.max_size is not a whole number",
        ),
        (lambda d: d["chunker"].__setitem__("seed", -1), r"chunker\.seed"),
        (lambda d: d["chunker"].__setitem__("avg_size", 8 << 20), r"chunker\.avg_size is 8388608"),
        (
            lambda d: d["hash"].__setitem__("key_wrapped", "!!"),
            r"hash\.key_wrapped is not valid base64",
        ),
        (lambda d: d["compression"].__setitem__("level", 99), r"compression\.level"),
        (lambda d: d["encryption"].__setitem__("mode", "rot13"), r"encryption\.mode"),
        (lambda d: d.pop("repository_id"), "repository_id"),
    ],
)
def test_a_damaged_config_names_the_field(home, edit, says):
    storage = MemoryStorage()
    Repository.init(storage, key_file=home / "k")
    document = json.loads(storage.get("config"))
    edit(document)
    storage.put("config", json.dumps(document).encode())
    with pytest.raises(
        RepositoryDamaged, match=f"the repository config .* is damaged: {says}"
    ) as caught:
        Repository.open(storage, KeySource(key_file=home / "k"))
    assert caught.value.exit_code == 3


def test_a_wrapped_hash_key_that_does_not_open_is_config_damage(home):
    storage = MemoryStorage()
    Repository.init(storage, key_file=home / "k")
    document = json.loads(storage.get("config"))
    recipient = document["encryption"]["recipients"][0]
    sealed = AgeSealer([recipient], None).seal(b"short")
    document["hash"]["key_wrapped"] = base64.b64encode(sealed).decode()
    storage.put("config", json.dumps(document).encode())
    repo = Repository.open(storage, KeySource(key_file=home / "k"))
    with pytest.raises(RepositoryDamaged, match="its hash key is 5 bytes, not 32"):
        repo.keyring.hash_key()
    document["hash"]["key_wrapped"] = base64.b64encode(b"age-encryption.org/v1\n junk").decode()
    storage.put("config", json.dumps(document).encode())
    repo = Repository.open(storage, KeySource(key_file=home / "k"))
    with pytest.raises(RepositoryDamaged, match=r"hash\.key_wrapped does not decrypt"):
        repo.keyring.hash_key()


def test_a_damaged_wrapped_identity_is_not_a_wrong_passphrase(home):
    storage = MemoryStorage()
    Repository.init(storage, passphrase="pw")
    storage.put("keys/identity.age", b"garbage")
    with pytest.raises(RepositoryDamaged, match=r"keys/identity\.age in the repository is damaged"):
        Repository.open(storage, KeySource(passphrase="pw")).keyring.identity()
    storage.delete("keys/identity.age")
    with pytest.raises(RepositoryDamaged, match=r"keys/identity\.age in the repository is missing"):
        Repository.open(storage, KeySource(passphrase="pw")).keyring.identity()


def test_init_refuses_chunker_parameters_out_of_range():
    with pytest.raises(UsageError, match=r"chunker\.max_size is 99, outside the allowed range"):
        Repository.init(
            MemoryStorage(), encryption=ENCRYPTION_NONE, chunker=ChunkerParams(max_size=99)
        )


def test_threads_using_the_chunk_store_first_at_once_share_one(tmp_path):
    """The break-it round saw two stores (and two cache rebuilds) when threads touched
    ``Repository.chunks`` first at the same moment."""
    import threading

    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    for _ in range(5):
        repo = Repository.open(storage, KeySource(key_file=tmp_path / "k"))
        start = threading.Barrier(8)
        seen = []

        def first_use(repo=repo, start=start, seen=seen):
            start.wait()
            seen.append(repo.chunks)

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(store) for store in seen}) == 1
