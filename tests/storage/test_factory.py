"""open_storage: a location string picks the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.errors import UsageError
from strongroom.storage.factory import open_storage
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from strongroom.storage.retry import RetryingStorage
from strongroom.storage.s3 import S3Storage


def test_plain_path_is_local_and_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage("backups/../repo")
    assert isinstance(storage, LocalStorage)
    assert storage.describe() == str(tmp_path.resolve() / "repo")
    storage.put("config", b"x")
    assert (tmp_path / "repo" / "config").read_bytes() == b"x"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    storage = open_storage("~/strongroom-repo")
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path.resolve() / "strongroom-repo"


def test_file_url_is_local(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}/my%20repo")
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path.resolve() / "my repo"
    with pytest.raises(UsageError):
        open_storage("file://otherhost/srv/repo")


def test_s3_url_gives_retrying_s3_with_endpoint() -> None:
    storage = open_storage("s3://my-bucket/team/prod", s3_endpoint="http://127.0.0.1:9000")
    assert isinstance(storage, RetryingStorage)
    inner = storage.inner
    assert isinstance(inner, S3Storage)
    assert (inner.bucket, inner.prefix, inner.endpoint_url) == (
        "my-bucket",
        "team/prod",
        "http://127.0.0.1:9000",
    )
    assert storage.describe() == "s3://my-bucket/team/prod (endpoint http://127.0.0.1:9000)"


def test_s3_url_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    storage = open_storage("s3://my-bucket")
    assert isinstance(storage, RetryingStorage)
    assert isinstance(storage.inner, S3Storage)
    assert storage.inner.prefix == ""
    assert storage.describe() == "s3://my-bucket"


def test_s3_url_works_end_to_end(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/repo", s3_endpoint=endpoint)
    storage.put("config", b"hello")
    assert open_storage(f"s3://{bucket}/repo", s3_endpoint=endpoint).get("config") == b"hello"
    assert list(open_storage(f"s3://{bucket}/other", s3_endpoint=endpoint).list("")) == []


def test_memory_is_shared_per_name() -> None:
    first = open_storage("memory://factory-test-a")
    assert isinstance(first, MemoryStorage)
    first.put("config", b"a")
    assert open_storage("memory://factory-test-a") is first
    assert open_storage("memory://factory-test-a").get("config") == b"a"
    other = open_storage("memory://factory-test-b")
    assert other is not first
    assert other.exists("config") is False
    assert first.describe() == "memory://factory-test-a"


@pytest.mark.parametrize("location", ["s3://", "s3:///just/a/prefix", "s3://bucket:9000/x"])
def test_bad_s3_url_is_a_usage_error(location: str) -> None:
    with pytest.raises(UsageError, match="no bucket name") as info:
        open_storage(location)
    assert "\n" not in str(info.value)


def test_s3_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(UsageError) as info:
        open_storage("s3://AKID:topsecret@bucket/prefix")
    assert "topsecret" not in str(info.value)
    assert "AWS_ACCESS_KEY_ID" in str(info.value)


@pytest.mark.parametrize("location", ["", "   ", "gs://bucket/x"])
def test_unusable_locations_are_usage_errors(location: str) -> None:
    with pytest.raises(UsageError):
        open_storage(location)
