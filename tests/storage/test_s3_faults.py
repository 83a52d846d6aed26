"""S3 storage behind a fault-injecting proxy (``strongroom_servers.s3proxy``) in front of
moto's server: 5xx, throttling, resets, truncated and corrupted bodies are retried; an
endpoint that never answers costs the operation's deadline, then one clear error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.errors import StorageError
from strongroom.repository.keys import KeySource
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.verify import verify_backup
from strongroom.storage.factory import open_storage
from strongroom.storage.retry import RetryingStorage
from strongroom.storage.s3 import S3Storage, make_client, timeouts_for
from strongroom_servers.s3proxy import FaultProxy
from tests.helpers import make_sqlite_db, run_cli, sqlite_counts

FAST_RETRIES = {"STRONGROOM_STORAGE_BASE_DELAY": "0.05"}


def _storage(proxy: FaultProxy, bucket: str, deadline: float = 10.0) -> RetryingStorage:
    inner = S3Storage(bucket, "repo", endpoint_url=proxy.url, deadline=deadline)
    return RetryingStorage(inner, base_delay=0.05, deadline=deadline)


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("error500", "GET"),
        ("error503", "PUT"),
        ("throttle", "GET"),
        ("reset", "PUT"),
        ("reset", "GET"),
        ("truncate", "GET"),
        ("corrupt", "GET"),
    ],
)
def test_transient_faults_are_retried(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy, kind: str, method: str
) -> None:
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    data = bytes(range(256)) * 64
    storage.put("chunks/ab/abcd", data)
    fault_proxy.set_fault(kind, count=2, methods=frozenset({method}), key_contains="/chunks/")
    if method == "PUT":
        storage.put("chunks/ab/abcd", data[::-1])
        data = data[::-1]
    assert storage.get("chunks/ab/abcd") == data
    assert fault_proxy.faults == 2  # both injected, both survived


def test_a_fault_that_persists_gives_up_with_one_line(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket)
    storage.put("config", b"x")
    fault_proxy.set_fault("corrupt", methods=frozenset({"GET"}))
    storage.attempts = 3
    with pytest.raises(StorageError) as info:
        storage.get("config")
    message = str(info.value)
    assert type(info.value) is StorageError
    assert message.startswith("get config failed after 3 attempts")
    assert "did not match its checksum" in message and "\n" not in message
    assert fault_proxy.faults == 3


def test_botocore_does_not_retry_on_its_own() -> None:
    client = make_client("http://127.0.0.1:9")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert timeouts_for(60) == (10.0, 30.0)
    assert timeouts_for(3) == (1.0, 1.5)


def test_a_black_hole_costs_the_deadline_not_minutes(
    s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    storage = _storage(fault_proxy, bucket, deadline=1.5)
    fault_proxy.set_fault("blackhole")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.get("config")
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 4
    message = str(info.value)
    assert message.startswith("get config on s3://")
    assert fault_proxy.url in message and "did not answer within" in message
    stopping = time.monotonic()
    fault_proxy.stop()  # black-holed connections do not hold the proxy up
    assert time.monotonic() - stopping < 2


def test_cli_list_against_a_black_hole_exits_6_within_the_deadline(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    fault_proxy.set_fault("blackhole")
    env = {
        "STRONGROOM_REPO": location,
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
        "STRONGROOM_STORAGE_DEADLINE": "3",
        "AWS_SECRET_ACCESS_KEY": "very-secret-key-123",
    }
    started = time.monotonic()
    result = run_cli("list", "--s3-endpoint", fault_proxy.url, env=env, timeout=60)
    elapsed = time.monotonic() - started
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert result.returncode == 6, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fault_proxy.url in lines[0] and "did not answer within 3" in lines[0], err
    assert "very-secret" not in err
    assert 3 <= elapsed < 15, elapsed  # 3 s deadline + interpreter start-up


def test_the_configured_storage_deadline_bounds_a_configured_backup(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    """``[repository] storage_deadline`` in strongroom.toml is the deadline of a command
    that opens the configured repository (here ``backup --config``)."""
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    db = make_sqlite_db(tmp_path / "shop.db", users=10, orders=10)
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f'[repository]\nlocation = "{location}"\ns3_endpoint = "{fault_proxy.url}"\n'
        f'key_file = "{tmp_path / "k"}"\nstorage_deadline = 2\n\n'
        f'[targets.shop]\nurl = "sqlite://{db}"\n'
    )
    fault_proxy.set_fault("blackhole")
    result = run_cli("backup", "--target", "shop", "--config", str(config), timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 6, err
    assert "did not answer within 2" in err, err


def test_corrupted_chunk_bodies_do_not_fail_verify_or_restore(
    tmp_path: Path, s3_bucket: tuple[str, str], fault_proxy: FaultProxy
) -> None:
    _, bucket = s3_bucket
    location = f"s3://{bucket}/shop"
    db = make_sqlite_db(tmp_path / "shop.db", users=300, orders=800)
    Repository.init(open_storage(location, fault_proxy.url), key_file=tmp_path / "k")
    repo = Repository.open(open_storage(location, fault_proxy.url), KeySource(tmp_path / "k"))
    manifest = run_backup(repo, SqliteEngine(str(db))).manifest

    # chunks are read from packs (ranged GETs) since issue 19
    chunks_only = {"methods": frozenset({"GET"}), "key_contains": "/packs/"}
    fault_proxy.set_fault("corrupt", count=2, **chunks_only)  # type: ignore[arg-type]
    assert verify_backup(repo, manifest, record=False).ok
    assert fault_proxy.faults == 2

    fault_proxy.set_fault("corrupt", count=2, **chunks_only)  # type: ignore[arg-type]
    env = {
        "STRONGROOM_REPO": location,
        "STRONGROOM_KEY_FILE": str(tmp_path / "k"),
        **FAST_RETRIES,
    }
    restored = tmp_path / "restored.db"
    result = run_cli(
        "restore", "latest", "--to", str(restored), "--s3-endpoint", fault_proxy.url, env=env
    )
    assert result.returncode == 0, result.stderr.decode()
    assert fault_proxy.faults == 4
    assert sqlite_counts(restored) == sqlite_counts(db)
