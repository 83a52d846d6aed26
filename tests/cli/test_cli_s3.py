"""The command line against an S3 endpoint over HTTP (moto's server), as with R2/MinIO/B2."""

import json

from tests.helpers import make_sqlite_db, run_cli, sqlite_counts


def test_s3_repository_full_cycle(tmp_path, s3_bucket):
    endpoint, bucket = s3_bucket
    env = {
        "STRONGROOM_REPO": f"s3://{bucket}/backups/shop",
        "STRONGROOM_KEY_FILE": str(tmp_path / "s3.key"),
    }
    db = make_sqlite_db(tmp_path / "shop.db", users=4000, orders=12000)
    for args in (
        ("init", "--s3-endpoint", endpoint),
        ("backup", str(db), "--s3-endpoint", endpoint),
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr.decode()
    # the endpoint may also come from AWS_ENDPOINT_URL, as boto3 users expect
    env["AWS_ENDPOINT_URL"] = endpoint
    listed = json.loads(run_cli("list", "--json", env=env).stdout)
    assert len(listed) == 1 and listed[0]["target"] == "shop"
    assert run_cli("verify", "latest", env=env).returncode == 0
    restored = tmp_path / "restored.db"
    result = run_cli("restore", "latest", "--to", str(restored), env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert sqlite_counts(restored) == sqlite_counts(db)
    second = run_cli("backup", str(db), env=env)
    assert "nothing new" in second.stdout.decode()

    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert "backups/shop/config" in keys
    assert any(k.startswith("backups/shop/packs/") for k in keys)  # issue 19: packs
    assert any(k.startswith("backups/shop/index/") for k in keys)
    assert sum(k.startswith("backups/shop/backups/") for k in keys) == 2


def test_s3_unreachable_endpoint_fails_clearly(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "STRONGROOM_REPO": "s3://bucket/prefix",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-very-secret",
        "STRONGROOM_STORAGE_ATTEMPTS": "2",
        "STRONGROOM_STORAGE_BASE_DELAY": "0.01",
    }
    result = run_cli("list", "--s3-endpoint", f"http://127.0.0.1:{port}", env=env, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 6, err
    assert "failed after 2 attempts" in err and "Traceback" not in err
    assert "very-secret" not in err


def test_s3_missing_bucket_is_named(tmp_path, moto_server):
    env = {"STRONGROOM_REPO": "s3://no-such-bucket/x", "STRONGROOM_KEY_FILE": str(tmp_path / "k")}
    result = run_cli("init", "--s3-endpoint", moto_server, env=env)
    err = result.stderr.decode()
    assert result.returncode == 6, err
    assert "no-such-bucket" in err and "does not exist" in err
