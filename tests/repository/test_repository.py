import json
import stat

import pytest

from strongroom.errors import (
    BackupNotFound,
    KeyMissing,
    RepositoryAlreadyInitialised,
    RepositoryNotInitialised,
    WrongKey,
)
from strongroom.repository.config import ENCRYPTION_NONE
from strongroom.repository.keys import KeySource
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
