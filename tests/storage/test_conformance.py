"""One suite every Storage backend must pass: local folder, memory, and S3 (moto over HTTP)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from strongroom.errors import ObjectNotFound, StorageError, StorageTransientError
from strongroom.storage.base import Storage
from strongroom.storage.factory import open_storage
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from strongroom.storage.s3 import S3Storage

S3_PREFIX = "team/prod-db"


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Each backend, built the way a user's location string builds it."""
    if request.param == "local":
        yield open_storage(str(tmp_path / "repo"))
    elif request.param == "memory":
        yield MemoryStorage()
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        yield open_storage(f"s3://{bucket}/{S3_PREFIX}", s3_endpoint=endpoint)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello\x00world", os.urandom(5 * 1024 * 1024)],
    ids=["empty", "small", "5MB"],
)
def test_put_get_round_trip(storage: Storage, data: bytes) -> None:
    storage.put("chunks/ab/ab12cd", data)
    assert storage.get("chunks/ab/ab12cd") == data
    assert storage.size("chunks/ab/ab12cd") == len(data)


def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    storage.put("config", b"first version, rather long")
    storage.put("config", b"second")
    assert storage.get("config") == b"second"
    assert storage.size("config") == 6
    assert list(storage.list("config")) == ["config"]


def test_missing_object_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as info:
        storage.get("backups/nope.json")
    assert str(info.value) == f"object backups/nope.json not found in {storage.describe()}"
    with pytest.raises(ObjectNotFound):
        storage.size("backups/nope.json")


def test_exists_follows_put_and_delete(storage: Storage) -> None:
    assert storage.exists("locks/backup-1") is False
    storage.put("locks/backup-1", b"owner")
    assert storage.exists("locks/backup-1") is True
    assert storage.exists("locks") is False  # a "directory" is not an object
    storage.delete("locks/backup-1")
    assert storage.exists("locks/backup-1") is False
    with pytest.raises(ObjectNotFound):
        storage.get("locks/backup-1")


def test_delete_missing_is_not_an_error(storage: Storage) -> None:
    storage.delete("chunks/zz/never-written")
    storage.put("keep", b"x")
    storage.delete("chunks/zz/never-written")
    assert storage.get("keep") == b"x"


def test_list_filters_by_exact_prefix(storage: Storage) -> None:
    keys = [
        "config",
        "chunks/ab/ab12",
        "chunks/ab/ab34",
        "chunks/abc/abc1",
        "chunks/cd/cd56",
        "chunksX/stray",
        "backups/20261121T140000Z-3f9a2c1b.json",
        "backups-old/20250101T000000Z-00000000.json",
    ]
    for key in keys:
        storage.put(key, key.encode())

    assert sorted(storage.list("")) == sorted(keys)
    assert sorted(storage.list("chunks/")) == [
        "chunks/ab/ab12",
        "chunks/ab/ab34",
        "chunks/abc/abc1",
        "chunks/cd/cd56",
    ]
    assert sorted(storage.list("chunks/ab/")) == ["chunks/ab/ab12", "chunks/ab/ab34"]
    assert sorted(storage.list("chunks/ab")) == [
        "chunks/ab/ab12",
        "chunks/ab/ab34",
        "chunks/abc/abc1",
    ]
    assert sorted(storage.list("chunks/ab/ab1")) == ["chunks/ab/ab12"]
    assert sorted(storage.list("backups/")) == ["backups/20261121T140000Z-3f9a2c1b.json"]
    assert sorted(storage.list("chunks")) == sorted(k for k in keys if k.startswith("chunks"))
    assert list(storage.list("wal/")) == []
    assert list(storage.list("nothing/deeper/")) == []


def test_list_after_delete(storage: Storage) -> None:
    storage.put("chunks/aa/1", b"1")
    storage.put("chunks/aa/2", b"2")
    storage.delete("chunks/aa/1")
    assert list(storage.list("chunks/")) == ["chunks/aa/2"]


def test_describe_is_safe_to_show(storage: Storage) -> None:
    text = storage.describe()
    assert text
    assert "\n" not in text
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if secret:  # set by the moto fixture for S3
        assert secret not in text
    if isinstance(storage, LocalStorage):
        assert text == str(storage.root)


def test_create_succeeds_once_and_never_overwrites(storage: Storage) -> None:
    assert storage.create("jobs/a/claim.json", b"first") is True
    assert storage.create("jobs/a/claim.json", b"second") is False
    assert storage.get("jobs/a/claim.json") == b"first"
    storage.delete("jobs/a/claim.json")
    assert storage.create("jobs/a/claim.json", b"third") is True
    assert list(storage.list("jobs/")) == ["jobs/a/claim.json"]


def test_exactly_one_of_16_concurrent_creates_wins(storage: Storage) -> None:
    import threading

    barrier = threading.Barrier(16)
    wins: list[int] = []

    def contend(n: int) -> None:
        barrier.wait()
        if storage.create("race/claim", str(n).encode()):
            wins.append(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert storage.get("race/claim") == str(wins[0]).encode()


def test_concurrent_puts_from_16_threads_all_land(storage: Storage) -> None:
    threads, per_thread = 16, 8
    barrier = threading.Barrier(threads)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            storage.put(f"chunks/{n:02x}/{i:04d}", f"{n}-{i}".encode() * 100)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(writer, n) for n in range(threads)]:
            future.result()

    listed = sorted(storage.list("chunks/"))
    expected = sorted(f"chunks/{n:02x}/{i:04d}" for n in range(threads) for i in range(per_thread))
    assert listed == expected
    for n in range(threads):
        for i in range(per_thread):
            assert storage.get(f"chunks/{n:02x}/{i:04d}") == f"{n}-{i}".encode() * 100


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../escape", "a/../../b", "a//b", "a/./b", "chunks/", ".tmp-x"]
)
def test_local_rejects_keys_that_could_escape(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "repo")
    for call in (
        lambda: storage.put(key, b"x"),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.size(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        MemoryStorage().put(key, b"x")
    assert not (tmp_path / "repo").exists()
    assert not (tmp_path / "escape").exists()


def test_local_rejects_list_prefix_that_could_escape(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for prefix in ("../", "/etc/", "a/../"):
        with pytest.raises(ValueError):
            list(storage.list(prefix))


# --- S3 specifics: the naming and the error mapping a real bucket would show ------------
def test_s3_objects_land_under_the_prefix(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/{S3_PREFIX}/", s3_endpoint=endpoint)
    storage.put("chunks/ab/ab12", b"data")
    flat = S3Storage(bucket, "", endpoint_url=endpoint)
    flat.put("config", b"root")

    raw = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    names = sorted(o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"])
    assert names == ["config", f"{S3_PREFIX}/chunks/ab/ab12"]
    assert list(storage.list("")) == ["chunks/ab/ab12"]
    assert storage.describe() == f"s3://{bucket}/{S3_PREFIX} (endpoint {endpoint})"


def test_s3_missing_bucket_is_a_clear_storage_error(moto_server: str) -> None:
    storage = S3Storage("no-such-bucket-strongroom", "p", endpoint_url=moto_server)
    with pytest.raises(StorageError) as info:
        storage.get("config")
    assert not isinstance(info.value, ObjectNotFound | StorageTransientError)
    assert str(info.value) == (
        f"S3 bucket 'no-such-bucket-strongroom' does not exist at {moto_server} "
        "(NoSuchBucket: The specified bucket does not exist)"
    )


def test_s3_describe_strips_credentials_from_endpoint() -> None:
    storage = S3Storage("b", "/x/y/", endpoint_url="http://user:sekrit@127.0.0.1:9000")
    assert storage.describe() == "s3://b/x/y (endpoint http://127.0.0.1:9000)"
    assert "sekrit" not in storage.describe()
    assert S3Storage("b", "", endpoint_url="https://minio.lan").describe() == (
        "s3://b (endpoint https://minio.lan)"
    )


def test_list_with_times_gives_each_key_its_modified_time(storage: Storage) -> None:
    """The WAL status reads segment times from one listing (storage.base.list_with_times)."""
    import time

    from strongroom.storage.base import ListsWithTimes, list_with_times

    before = time.time()
    storage.put("logs/s/g/one", b"1")
    storage.put("logs/s/g/two", b"22")
    storage.put("chunks/ab/x", b"3")
    assert isinstance(storage, ListsWithTimes)
    found = dict(list_with_times(storage, "logs/s/"))
    assert sorted(found) == ["logs/s/g/one", "logs/s/g/two"]
    for modified in found.values():
        assert modified is not None
        # S3 keeps whole seconds; a local file system's clock may lag time.time() a little
        assert before - 2 <= modified <= time.time() + 2
    assert sorted(storage.list("logs/s/")) == sorted(found)


def test_get_range_returns_exactly_the_bytes_asked(storage: Storage) -> None:
    data = os.urandom(300_000)
    storage.put("packs/ab/ab12", data)
    assert storage.get_range("packs/ab/ab12", 0, 10) == data[:10]
    assert storage.get_range("packs/ab/ab12", 123_456, 70_000) == data[123_456:193_456]
    assert storage.get_range("packs/ab/ab12", len(data) - 8, 8) == data[-8:]
    assert storage.get_range("packs/ab/ab12", 0, len(data)) == data
    assert storage.get_range("packs/ab/ab12", 5, 0) == b""


def test_get_range_of_a_missing_object_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as info:
        storage.get_range("packs/zz/nope", 0, 4)
    assert str(info.value) == f"object packs/zz/nope not found in {storage.describe()}"


@pytest.mark.parametrize(("offset", "length"), [(90, 20), (100, 1), (500, 10)])
def test_get_range_past_the_end_is_a_short_read_naming_the_key(
    storage: Storage, offset: int, length: int
) -> None:
    storage.put("packs/cd/cd34", bytes(100))
    with pytest.raises(StorageError) as info:
        storage.get_range("packs/cd/cd34", offset, length)
    assert not isinstance(info.value, ObjectNotFound | StorageTransientError)
    assert "short read of packs/cd/cd34" in str(info.value)


def test_get_range_refuses_a_negative_range(storage: Storage) -> None:
    storage.put("packs/ef/ef56", b"0123456789")
    with pytest.raises(ValueError):
        storage.get_range("packs/ef/ef56", -1, 2)
    with pytest.raises(ValueError):
        storage.get_range("packs/ef/ef56", 0, -2)


def test_get_range_through_retrying_storage(storage: Storage) -> None:
    from strongroom.storage.retry import RetryingStorage

    retrying = RetryingStorage(storage, attempts=2, base_delay=0.01)
    retrying.put("packs/01/0123", b"abcdefghij")
    assert retrying.get_range("packs/01/0123", 3, 4) == b"defg"
    with pytest.raises(ObjectNotFound):
        retrying.get_range("packs/01/0199", 0, 1)
    with pytest.raises(StorageError, match="short read of packs/01/0123"):
        retrying.get_range("packs/01/0123", 8, 4)
