"""S3-compatible stores that implement neither flexible checksums nor aws-chunked uploads
(R2 until 2025, older MinIO and Ceph gateways), played by the fault proxy's ``old_store``
kind in front of moto: strongroom falls back to requests without them and works; and a
store's permanent answers (403, 404 bucket, 301 region, 501) fail at once, in one line
that shows the store's own code and message."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import ChunkDamaged, StorageError, StorageTransientError
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.verify import verify_backup
from strongroom.storage.factory import open_storage
from strongroom.storage.retry import RetryingStorage
from strongroom.storage.s3 import S3Storage, checksums_unsupported
from strongroom_servers.s3proxy import FaultProxy, unsupported_header
from tests.helpers import cli_ok, make_sqlite_db, run_cli, sqlite_counts

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FAST = {"STRONGROOM_STORAGE_BASE_DELAY": "0.05"}


def _storage(proxy: FaultProxy, bucket: str) -> RetryingStorage:
    inner = S3Storage(bucket, "repo", endpoint_url=proxy.url, deadline=10)
    return RetryingStorage(inner, base_delay=0.05, deadline=10)


def _error_line(result_stderr: bytes) -> str:
    err = result_stderr.decode()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_proxy_plays_an_old_store(s3_bucket: tuple[str, str], fault_proxy: FaultProxy) -> None:
    """The default boto3 client is refused as such a store refuses it (501, the header
    named); requests without those headers pass."""
    _, bucket = s3_bucket
    fault_proxy.set_fault("old_store")
    client = boto3.client("s3", endpoint_url=fault_proxy.url, region_name="us-east-1")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"data")
    error = info.value.response["Error"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert error["Code"] == "NotImplemented"
    assert "Header 'x-amz-checksum-crc32'" in error["Message"]
    assert checksums_unsupported(info.value)
    client.list_objects_v2(Bucket=bucket)  # no checksum header: passes
    assert fault_proxy.faults == 1
    assert unsupported_header({"Content-Encoding": "aws-chunked"}) == (
        "content-encoding",
        "aws-chunked",
    )
    streaming = {"X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert unsupported_header(streaming) is not None
    assert unsupported_header({"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}) is None


def test_storage_falls_back_once_and_keeps_working(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    fault_proxy.set_fault("old_store")
    storage = _storage(fault_proxy, bucket)
    inner = storage.inner
    assert isinstance(inner, S3Storage)
    storage.put("config", b"one")  # refused (501), then sent again without checksums
    assert not inner.checksums
    assert fault_proxy.faults == 1
    assert storage.create("locks/a", b"x") and not storage.create("locks/a", b"y")
    assert storage.get("config") == b"one"  # no x-amz-checksum-mode either
    assert storage.exists("config") and storage.size("config") == 3
    assert sorted(storage.list("")) == ["config", "locks/a"]
    storage.delete("locks/a")
    assert fault_proxy.faults == 1  # only the first request was refused


def test_a_get_first_falls_back_too(s3_bucket: tuple[str, str], fault_proxy: FaultProxy) -> None:
    """A read-only command's first request is a GET with ``x-amz-checksum-mode``."""
    _, bucket = s3_bucket
    _storage(fault_proxy, bucket).put("config", b"one")
    fault_proxy.set_fault("old_store")
    storage = _storage(fault_proxy, bucket)
    assert storage.get("config") == b"one"
    assert fault_proxy.faults == 1


def test_the_aws_setting_skips_the_refused_request(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bucket = s3_bucket
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    fault_proxy.set_fault("old_store")
    storage = _storage(fault_proxy, bucket)
    storage.put("config", b"one")
    assert storage.get("config") == b"one"
    assert fault_proxy.faults == 0


def test_bodies_damaged_on_the_way_are_still_caught_without_checksums(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    """Without S3 checksums a damaged body is caught by its ETag (its MD5, once the
    store showed it is one: retried) or else by the chunk's own hash (never accepted)."""
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    db = make_sqlite_db(tmp_path / "shop.db", users=200, orders=500)
    fault_proxy.set_fault("old_store")
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    repo = Repository.open(open_storage(location, fault_proxy.url), KeySource(tmp_path / "k"))
    manifest = run_backup(repo, SqliteEngine(str(db))).manifest
    assert verify_backup(repo, manifest, record=False).ok  # ETags learnt to be MD5s
    refusals = fault_proxy.faults
    assert refusals == 2  # one per storage (init's, then open's)
    # chunks are read from packs with ranged GETs since issue 19: a range has no ETag
    # (MD5) of its own, so a damaged body is caught by the blob's AEAD tag and the
    # chunk's hash, and read once more (ChunkStore.load_run)
    packs_only = {"methods": frozenset({"GET"}), "key_contains": "/packs/"}
    fault_proxy.set_fault("corrupt", count=2, **packs_only)  # type: ignore[arg-type]
    assert verify_backup(repo, manifest, record=False).ok
    assert fault_proxy.faults == refusals + 2  # two damaged bodies, read again

    # a storage without checksums: one damaged body is read again; a chunk whose every
    # read comes back damaged is never accepted
    storage = open_storage(location, fault_proxy.url)
    fresh = Repository.open(storage, KeySource(tmp_path / "k"))
    assert isinstance(storage, RetryingStorage) and isinstance(storage.inner, S3Storage)
    storage.inner._plain = storage.inner._client  # as after a fallback
    chunk_id = sorted(fresh.chunks.known_ids())[0]
    plaintext = fresh.chunks.load(chunk_id)
    fault_proxy.set_fault("corrupt", count=1, **packs_only)  # type: ignore[arg-type]
    assert fresh.chunks.load(chunk_id) == plaintext
    fault_proxy.set_fault("corrupt", count=3, **packs_only)  # type: ignore[arg-type]
    with pytest.raises(ChunkDamaged):  # damaged at every read (ChunkStore.READ_ATTEMPTS)
        fresh.chunks.load(chunk_id)
    assert fault_proxy.faults == refusals + 6


def test_cli_works_end_to_end_against_an_old_store(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    fault_proxy.set_fault("old_store")
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=800)
    env = {
        "STRONGROOM_REPO": f"s3://{bucket}/shop",
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
        **FAST,
    }
    endpoint = ("--s3-endpoint", fault_proxy.url)
    cli_ok(run_cli("init", *endpoint, env=env))
    assert fault_proxy.faults >= 1
    cli_ok(run_cli("backup", str(db), "--target", "shop", *endpoint, env=env))
    assert "shop" in cli_ok(run_cli("list", *endpoint, env=env))
    cli_ok(run_cli("verify", "latest", *endpoint, env=env))
    restored = tmp_path / "restored.db"
    result = run_cli("restore", "latest", "--to", str(restored), "--yes", *endpoint, env=env)
    cli_ok(result)
    assert sqlite_counts(restored) == sqlite_counts(db)
    assert fault_proxy.faults >= 5  # every command met the refusal, and fell back


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("denied", "AccessDenied: Access Denied"),
        ("bad_key", "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist"),
        ("bad_signature", "SignatureDoesNotMatch: The request signature we calculated"),
        ("bad_request", "InvalidRequest: The request is not valid for this store."),
        ("not_implemented", "NotImplemented: A header you provided implies functionality"),
    ],
)
def test_cli_permanent_answers_fail_at_once_in_one_line(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    fault_proxy: FaultProxy,
    kind: str,
    expected: str,
) -> None:
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    fault_proxy.set_fault(kind)
    before = fault_proxy.requests
    env = {
        "STRONGROOM_REPO": location,
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
        "AWS_SECRET_ACCESS_KEY": SECRET,
        **FAST,
    }
    result = run_cli("list", "--s3-endpoint", fault_proxy.url, env=env, timeout=60)
    line = _error_line(result.stderr)
    assert result.returncode == 6, line
    assert expected in line, line
    assert "attempts" not in line and "temporary" not in line, line
    assert SECRET not in result.stderr.decode() + result.stdout.decode()
    # one request; a 501 is repeated once without flexible checksums
    assert fault_proxy.requests - before == (2 if kind == "not_implemented" else 1)


def test_cli_missing_bucket_is_one_line_after_one_attempt(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    endpoint, _ = s3_bucket
    env = {"STRONGROOM_KEY_FILE": str(tmp_path / "k"), **FAST}
    before = fault_proxy.requests
    location = "s3://strongroom-no-such-bucket-3f9a/shop"
    result = run_cli("list", "--repo", location, "--s3-endpoint", fault_proxy.url, env=env)
    line = _error_line(result.stderr)
    assert result.returncode == 6, line
    assert "strongroom-no-such-bucket-3f9a" in line and "does not exist" in line, line
    assert "NoSuchBucket" in line and "The specified bucket does not exist" in line, line
    assert fault_proxy.requests - before == 1
    assert endpoint not in line  # the proxy's endpoint is shown, moto's is not reached


def test_cli_wrong_region_names_the_bucket_region(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    fault_proxy.set_fault("wrong_region")
    before = fault_proxy.requests
    env = {"STRONGROOM_REPO": location, "STRONGROOM_KEY_FILE": str(tmp_path / "k"), **FAST}
    result = run_cli("list", "--s3-endpoint", fault_proxy.url, env=env, timeout=60)
    line = _error_line(result.stderr)
    assert result.returncode == 6, line
    assert "PermanentRedirect: The bucket you are attempting to access" in line, line
    assert "AWS_DEFAULT_REGION=eu-west-3" in line, line
    # botocore follows the region once itself (it would reach AWS's right endpoint);
    # strongroom does not retry
    assert fault_proxy.requests - before <= 2


def test_transient_answers_show_the_store_message(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    storage.put("config", b"x")
    storage.attempts = 2
    fault_proxy.set_fault("error503")
    with pytest.raises(StorageError) as info:
        storage.get("config")
    message = str(info.value)
    assert message.startswith("get config failed after 2 attempts")
    assert "ServiceUnavailable: Service is unable to handle request." in message


def test_store_messages_are_redacted_and_kept_to_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    storage = S3Storage("bucket", "repo", endpoint_url="http://127.0.0.1:9")
    answer = {
        "Error": {"Code": "AccessDenied", "Message": f"denied for\n{SECRET} " + "x" * 600},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    error = storage._error(ClientError(answer, "GetObject"), "get", "config")  # type: ignore[arg-type]
    assert type(error) is StorageError
    text = str(error)
    assert SECRET not in text and "\n" not in text and len(text) < 600
    assert "AccessDenied: denied for" in text
    answer = {
        "Error": {"Code": "NotImplemented", "Message": "nope"},
        "ResponseMetadata": {"HTTPStatusCode": 501},
    }
    error = storage._error(ClientError(answer, "PutObject"), "put", "k")  # type: ignore[arg-type]
    assert not isinstance(error, StorageTransientError)
    assert "NotImplemented: nope" in str(error)
