"""Attacks on the storage deadline and retries (issue 15 items 3-4), through moto's server
and the fault-injecting proxy: bad deadline values, writes that land after we gave up on
them (a late manifest, a create whose answer was lost, a late delete), abandoned attempt
threads, corrupted uploads and listings."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import RepositoryBusy, StorageError, StorageTransientError, UsageError
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import LOCKS_PREFIX
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.prune import prune
from strongroom.services.verify import verify_backup
from strongroom.storage.factory import open_storage
from strongroom.storage.retry import RetryingStorage
from strongroom.storage.s3 import S3Storage
from strongroom_servers.s3proxy import FaultProxy
from tests.helpers import make_sqlite_db, run_cli


def _storage(proxy: FaultProxy, bucket: str, deadline: float = 5.0) -> RetryingStorage:
    inner = S3Storage(bucket, "repo", endpoint_url=proxy.url, deadline=deadline)
    return RetryingStorage(inner, base_delay=0.05, deadline=deadline)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1e9", "inf", "nan"])
def test_a_bad_storage_deadline_is_one_error_line_exit_2(value: str) -> None:
    result = run_cli(
        "list",
        "--repo",
        "s3://strongroom-nowhere/x",
        "--s3-endpoint",
        "http://127.0.0.1:9",
        env={"STRONGROOM_STORAGE_DEADLINE": value},
        timeout=60,
    )
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("error: STRONGROOM_STORAGE_DEADLINE"), err


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e9])
def test_a_configured_deadline_must_be_a_real_number_of_seconds(value: float) -> None:
    with pytest.raises(UsageError, match="storage_deadline"):
        open_storage("s3://strongroom-nowhere/x", "http://127.0.0.1:9", deadline=value)


def test_a_manifest_put_that_lands_after_we_gave_up_loses_no_chunk_to_prune(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    """The backup gives up on its manifest (no answer within the deadline) and fails, but
    the server had the request and stores it later. Had the backup removed its lock, a
    prune in between would delete the chunks of a backup that then appears in the list."""
    moto, bucket = s3_bucket
    location = f"s3://{bucket}/repo"
    Repository.init(open_storage(location, moto), key_file=tmp_path / "k")
    db = make_sqlite_db(tmp_path / "shop.db", users=200, orders=200)
    repo = Repository.open(
        open_storage(location, fault_proxy.url, deadline=1.5), KeySource(tmp_path / "k")
    )
    fault_proxy.set_fault("slow", methods=frozenset({"PUT"}), key_contains="/backups/", delay=4)
    with pytest.raises(StorageError, match="did not answer"):
        run_backup(repo, SqliteEngine(str(db)))

    direct = Repository.open(open_storage(location, moto), KeySource(tmp_path / "k"))
    with pytest.raises(RepositoryBusy, match="may land late"):
        prune(direct, wait=0.5)
    deadline = time.monotonic() + 10
    while not direct.backup_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    (backup_id,) = direct.backup_ids()  # the late manifest landed
    assert verify_backup(direct, direct.load_manifest(backup_id), record=False).ok


def test_a_create_whose_answer_was_lost_is_ours(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    """The first attempt created the object, its answer was lost; the retry gets 412.
    Reporting False would make a scheduler believe another daemon claimed the run."""
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    fault_proxy.set_fault("drop", count=1, methods=frozenset({"PUT"}))
    assert storage.create("runs/job/claim.json", b"mine") is True
    assert fault_proxy.faults == 1
    assert storage.create("runs/job/claim.json", b"theirs") is False  # a real loser
    assert storage.get("runs/job/claim.json") == b"mine"


def test_a_delete_whose_answer_was_lost_is_counted_as_unsettled(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    storage.put("chunks/ab/abcd", b"data")
    fault_proxy.set_fault("drop", count=1, methods=frozenset({"PUT"}))
    storage.put("chunks/ab/abcd", b"data")  # a late put of the same bytes harms nothing
    assert storage.unsettled_writes == 0
    fault_proxy.set_fault("drop", count=1, methods=frozenset({"DELETE"}))
    storage.delete("chunks/ab/abcd")  # retried: done, but the first may land late
    assert storage.unsettled_writes == 1
    assert not storage.exists("chunks/ab/abcd")


def test_abandoned_attempts_end_and_many_operations_leave_no_thread(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    # the healthy calls go through the same deadline-guarded path with room for a loaded
    # CI host (0.3 s for 100 round trips under load failed there, not the property)
    storage = _storage(fault_proxy, bucket, deadline=10)
    for i in range(100):
        storage.put(f"chunks/{i % 256:02x}/k{i}", b"x" * 100)
        assert storage.get(f"chunks/{i % 256:02x}/k{i}") == b"x" * 100
    fault_proxy.set_fault("blackhole")
    abandoning = _storage(fault_proxy, bucket, deadline=0.3)
    for i in range(10):
        with pytest.raises(StorageError, match="did not answer within"):
            abandoning.get(f"chunks/{i:02x}/k{i}")
    fault_proxy.set_fault(None)
    deadline = time.monotonic() + 10  # botocore's read timeout ends them (1 s here)
    while time.monotonic() < deadline:
        calls = [t for t in threading.enumerate() if t.name == "sr-storage-call"]
        if not calls:
            break
        time.sleep(0.1)
    assert not calls, calls


def test_a_corrupted_upload_is_never_read_back_as_good_data(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    """moto (unlike S3) does not check the upload's checksum: the object is stored
    damaged, with the checksum of the good data. Reading it fails in one line that names
    the object, after the retries; it is never returned as if it were good."""
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    fault_proxy.set_fault("corrupt_upload", count=1, methods=frozenset({"PUT"}))
    storage.put("chunks/ab/abcd", bytes(range(256)) * 100)
    assert fault_proxy.faults == 1
    with pytest.raises(StorageError, match=r"chunks/ab/abcd.*did not match its checksum") as info:
        storage.get("chunks/ab/abcd")
    assert "\n" not in str(info.value)


def test_s3_refusing_a_damaged_upload_is_retried() -> None:
    """Real S3 checks Content-MD5 and x-amz-checksum-*: a mismatch (the body was damaged on
    the way) is ``400 BadDigest``, worth sending again, not a permanent failure."""
    storage = S3Storage("bucket", "repo", endpoint_url="http://127.0.0.1:9", deadline=1)
    response = {
        "Error": {"Code": "BadDigest", "Message": "The CRC32 you specified did not match"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    error = storage._error(ClientError(response, "PutObject"), "put", "chunks/ab/abcd")  # type: ignore[arg-type]
    assert isinstance(error, StorageTransientError)


@pytest.mark.parametrize("kind", ["corrupt", "truncate", "drop", "reset"])
def test_a_damaged_listing_page_is_retried_not_trusted(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy, kind: str
) -> None:
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    expected = sorted(f"chunks/{i:02x}/k{i}" for i in range(20))
    for key in expected:
        storage.put(key, b"x")
    fault_proxy.set_fault(kind, count=1, methods=frozenset({"GET"}), key_contains="list-type")
    assert sorted(storage.list("chunks/")) == expected
    assert fault_proxy.faults == 1


def test_a_backup_against_a_link_slower_than_the_deadline_fails_in_one_line(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    moto, bucket = s3_bucket
    location = f"s3://{bucket}/repo"
    Repository.init(open_storage(location, moto), key_file=tmp_path / "k")
    db = make_sqlite_db(tmp_path / "shop.db", users=50, orders=50)
    # chunks are uploaded in packs since issue 19
    fault_proxy.set_fault("slow", methods=frozenset({"PUT"}), key_contains="/packs/", delay=3)
    env = {
        "STRONGROOM_REPO": location,
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
        "STRONGROOM_STORAGE_DEADLINE": "1",
        "AWS_SECRET_ACCESS_KEY": "very-secret-key-123",
    }
    result = run_cli(
        "backup", f"sqlite://{db}", "--s3-endpoint", fault_proxy.url, env=env, timeout=60
    )
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert result.returncode == 6, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "packs/" in lines[0] and "did not answer within" in lines[0], err
    assert "STRONGROOM_STORAGE_DEADLINE" in lines[0] and "very-secret" not in err
    direct = open_storage(location, moto)
    assert not list(direct.list("backups/"))
    assert list(direct.list(LOCKS_PREFIX))  # left to expire: a pack put may land late
