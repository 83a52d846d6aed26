# ruff: noqa: F811  (the imported fixture cluster is a test argument)
"""Hostile cases for the first PITR slice: wal-push / wal-fetch on odd inputs and restore's
argument checks (fast: a fake data directory with global/pg_control, no server)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers import run_cli_alone, text_ok
from tests.wal.test_wal_commands import SYSID, _env, cluster, fetch, log_objects, push, segment  # noqa: F401

NAME = "000000010000000000000005"


def _objects(c: dict[str, Path]) -> list[Path]:
    return log_objects(c["repo"]) if (c["repo"] / "logs").exists() else []


def test_push_of_a_missing_path_fails_cleanly(cluster: dict[str, Path]) -> None:
    r = run_cli_alone("wal-push", f"pg_wal/{NAME}", env=_env(cluster), cwd=cluster["data"])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.count("error:") == 1 and "cannot read" in r.stderr
    assert _objects(cluster) == []


def test_push_of_a_directory_fails_cleanly(cluster: dict[str, Path]) -> None:
    (cluster["data"] / "pg_wal" / NAME).mkdir()
    r = run_cli_alone("wal-push", f"pg_wal/{NAME}", env=_env(cluster), cwd=cluster["data"])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.count("error:") == 1
    assert _objects(cluster) == []


def test_push_of_an_empty_segment_is_refused(cluster: dict[str, Path]) -> None:
    r = push(cluster, NAME, b"")
    assert r.returncode == 7, r.stderr
    assert _objects(cluster) == []


def test_push_of_a_partial_then_fetch_is_identical(cluster: dict[str, Path]) -> None:
    name = NAME + ".partial"
    data = segment(NAME)[: 3 * 8192]
    text_ok(push(cluster, name, data))
    text_ok(fetch(cluster, name, "pg_wal/p"))
    assert (cluster["data"] / "pg_wal" / "p").read_bytes() == data


def test_push_of_a_partial_of_another_cluster_is_refused(cluster: dict[str, Path]) -> None:
    r = push(cluster, NAME + ".partial", segment(NAME, sysid=SYSID + 9)[:8192])
    assert r.returncode == 7, r.stderr
    assert _objects(cluster) == []


@pytest.mark.parametrize(
    "name", ["0000000100000000000000zz", "00000001000000000000000", "x.history"]
)
def test_push_of_a_non_wal_name_is_refused(cluster: dict[str, Path], name: str) -> None:
    r = push(cluster, name, b"x")
    assert r.returncode == 2 and "not a WAL file name" in r.stderr, r.stderr
    assert _objects(cluster) == []


def test_push_through_dotdot_files_under_the_basename_only(cluster: dict[str, Path]) -> None:
    data = segment(NAME)
    (cluster["data"] / "pg_wal" / NAME).write_bytes(data)
    r = run_cli_alone(
        "wal-push", f"pg_wal/../pg_wal/{NAME}", env=_env(cluster), cwd=cluster["data"]
    )
    text_ok(r)
    objs = _objects(cluster)
    assert len(objs) == 1 and objs[0].name.startswith(NAME + "-")
    assert objs[0].is_relative_to(cluster["repo"] / "logs")


def test_two_concurrent_pushes_of_one_segment(cluster: dict[str, Path]) -> None:
    data = segment(NAME)
    (cluster["data"] / "pg_wal" / NAME).write_bytes(data)
    results: list[subprocess.CompletedProcess[str]] = []

    def one() -> None:
        results.append(
            run_cli_alone("wal-push", f"pg_wal/{NAME}", env=_env(cluster), cwd=cluster["data"])
        )

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len(_objects(cluster)) == 1
    text_ok(fetch(cluster, NAME))
    assert (cluster["data"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == data


def test_fetch_into_a_missing_folder_is_a_usage_error(cluster: dict[str, Path]) -> None:
    text_ok(push(cluster, NAME, segment(NAME)))
    r = fetch(cluster, NAME, "nowhere/RECOVERYXLOG")
    assert r.returncode == 2 and r.stderr.count("error:") == 1, r.stderr
    assert not (cluster["data"] / "nowhere").exists()


def test_fetch_replaces_an_existing_file_and_leaves_no_temp(cluster: dict[str, Path]) -> None:
    data = segment(NAME)
    text_ok(push(cluster, NAME, data))
    (cluster["data"] / "pg_wal" / "RECOVERYXLOG").write_bytes(b"old")
    text_ok(fetch(cluster, NAME))
    assert (cluster["data"] / "pg_wal" / "RECOVERYXLOG").read_bytes() == data
    assert not list((cluster["data"] / "pg_wal").glob(".strongroom-*"))


def test_fetch_onto_a_directory_fails_cleanly(cluster: dict[str, Path]) -> None:
    text_ok(push(cluster, NAME, segment(NAME)))
    (cluster["data"] / "pg_wal" / "adir").mkdir()
    r = fetch(cluster, NAME, "pg_wal/adir")
    assert r.returncode not in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert not list((cluster["data"] / "pg_wal").glob(".strongroom-*"))


@pytest.mark.parametrize("name", ["/etc/passwd", "../" + NAME, "pg_wal/" + NAME, ""])
def test_fetch_of_a_path_name_is_refused(cluster: dict[str, Path], name: str) -> None:
    r = fetch(cluster, name)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (cluster["data"] / "pg_wal" / "RECOVERYXLOG").exists()


def test_push_with_a_wrong_key_writes_nothing(cluster: dict[str, Path]) -> None:
    other = cluster["tmp"] / "other"
    other.mkdir()
    env2 = {"STRONGROOM_REPO": str(other / "repo"), "STRONGROOM_KEY_FILE": str(other / "k")}
    text_ok(run_cli_alone("init", env=env2, cwd=other))
    (cluster["data"] / "pg_wal" / NAME).write_bytes(segment(NAME))
    env = {"STRONGROOM_REPO": str(cluster["repo"]), "STRONGROOM_KEY_FILE": str(other / "k")}
    r = run_cli_alone("wal-push", f"pg_wal/{NAME}", env=env, cwd=cluster["data"])
    assert r.returncode == 4, r.stderr
    assert "AGE-SECRET-KEY" not in r.stderr
    assert _objects(cluster) == []


def test_push_into_a_missing_repository_fails(cluster: dict[str, Path]) -> None:
    (cluster["data"] / "pg_wal" / NAME).write_bytes(segment(NAME))
    env = {
        "STRONGROOM_REPO": str(cluster["tmp"] / "none"),
        "STRONGROOM_KEY_FILE": str(cluster["key"]),
    }
    r = run_cli_alone("wal-push", f"pg_wal/{NAME}", env=env, cwd=cluster["data"])
    assert r.returncode == 3, r.stderr
    assert not (cluster["tmp"] / "none").exists()


def _restore(c: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli_alone(
        "restore", "--to-datadir", str(c["tmp"] / "dd"), *args, env=_env(c), cwd=c["tmp"]
    )


@pytest.mark.parametrize("when", ["yesterday", "2026-13-01 00:00:00+00", "", "12:00"])
def test_restore_to_a_garbage_time_is_a_usage_error(cluster: dict[str, Path], when: str) -> None:
    r = _restore(cluster, "--to-time", when)
    assert r.returncode == 2 and "--to-time" in r.stderr, r.stderr
    assert not (cluster["tmp"] / "dd").exists()


@pytest.mark.parametrize(
    "when", ["1970-01-01 00:00:00+00", "2100-01-01T00:00:00Z", "2026-11-30 14:03:12"]
)
def test_restore_to_a_valid_time_without_base_backup_says_so(
    cluster: dict[str, Path], when: str
) -> None:
    r = _restore(cluster, "--to-time", when)
    assert r.returncode == 3 and "no base backup" in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1
    assert not (cluster["tmp"] / "dd").exists()


@pytest.mark.parametrize("lsn", ["garbage", "0/", "/1", "1/2/3", "0x16B3748"])
def test_restore_to_a_garbage_lsn_is_a_usage_error(cluster: dict[str, Path], lsn: str) -> None:
    r = _restore(cluster, "--to-lsn", lsn)
    assert r.returncode == 2 and "not an LSN" in r.stderr, r.stderr


@pytest.mark.parametrize("lsn", ["0/-1", "-1/0", "0x0/0x16", "1_0/0", "+0/+1"])
def test_restore_to_an_lsn_postgres_would_refuse_is_a_usage_error(
    cluster: dict[str, Path], lsn: str
) -> None:
    r = _restore(cluster, "--to-lsn", lsn)
    assert r.returncode == 2 and "not an LSN" in r.stderr, r.stderr


def test_restore_to_an_lsn_beyond_64_bits_is_a_usage_error(cluster: dict[str, Path]) -> None:
    r = _restore(cluster, "--to-lsn", "1FFFFFFFF/0")
    assert r.returncode == 2 and "not an LSN" in r.stderr, r.stderr


def test_restore_with_both_time_and_lsn_is_refused(cluster: dict[str, Path]) -> None:
    r = _restore(cluster, "--to-time", "2026-11-30 14:03:12+01", "--to-lsn", "0/1")
    assert r.returncode == 2 and "one of" in r.stderr, r.stderr
