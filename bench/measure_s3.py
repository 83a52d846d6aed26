"""S3 efficiency: ``strongroom backup`` of the benchmark database into a local S3 endpoint
(moto's server on 127.0.0.1) through a counting proxy, at 1, the default and twice the
default number of pack upload threads; then one restore from it. Requests by method, objects
and time per GB backed up. Nothing leaves loopback."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from harness import DB, Bench
from report_format import mb, secs
from results_model import GB, Results

from strongroom.repository.chunks import UPLOAD_WORKERS
from strongroom_servers.s3proxy import FaultProxy

BUCKET = "strongroom-bench"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
KINDS = ("PUT", "GET", "HEAD", "LIST", "DELETE", "POST")


class CountingProxy(FaultProxy):
    """The tests' fault proxy with no fault set: forwards every request unchanged and counts
    them by kind (LIST is a GET of the bucket itself) and, for PUT, by top folder."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def reset(self) -> None:
        with self._count_lock:
            self.counts = Counter()

    def _pick(self, method: str, path: str, unsupported: tuple[str, str] | None = None) -> Any:
        parts = urlsplit(path).path.strip("/").split("/")
        kind = "LIST" if method == "GET" and len(parts) < 2 else method
        with self._count_lock:
            self.counts[kind] += 1
            if kind == "PUT" and len(parts) > 2:
                self.counts[f"PUT {parts[2]}/"] += 1
        return super()._pick(method, path, unsupported)


class S3World:
    """moto's server and the counting proxy in front of it, with one bucket."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        for name in ("werkzeug", "strongroom_servers.s3proxy"):  # their request logs
            logging.getLogger(name).setLevel(logging.ERROR)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.moto_url,
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        )
        self.client.create_bucket(Bucket=BUCKET)
        self.proxy = CountingProxy(self.moto_url)
        self.proxy.start()

    def objects(self, prefix: str) -> tuple[int, int, Counter[str]]:
        """Objects under ``prefix`` (straight from moto), their bytes, and count by folder."""
        count = size = 0
        folders: Counter[str] = Counter()
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/"
        ):
            for item in page.get("Contents", []):
                count += 1
                size += int(item["Size"])
                folders[item["Key"][len(prefix) + 1 :].split("/")[0]] += 1
        return count, size, folders

    def delete(self, prefix: str) -> None:
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/"
        ):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})

    def stop(self) -> None:
        self.proxy.stop()
        self.moto.stop()
        wsgi = getattr(self.moto, "_server", None)
        if wsgi is not None:
            wsgi.server_close()


def per_gb(counts: Counter[str], raw: int) -> dict[str, float]:
    gb = raw / GB
    return {k: round(counts.get(k, 0) / gb, 1) for k in (*KINDS, "total")} if gb else {}


def measure(bench: Bench, res: Results, workers: list[int]) -> None:
    """Backups of the benchmark database (in its state when called) into S3 at each number
    of upload threads in ``workers``, fresh prefix each; one restore from the default's."""
    world = S3World()
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": world.proxy.url}
    key = bench.work / "s3.key"
    url = bench.server.url(DB)
    runs: list[dict[str, Any]] = []
    restore: dict[str, Any] = {}
    try:
        for n in workers:
            prefix = f"w{n}"
            repo = f"s3://{BUCKET}/{prefix}"
            key.unlink(missing_ok=True)
            bench.run(
                "strongroom init (s3)",
                bench.sr("init", "--repo", repo, "--key-file", key),
                env=env,
                log="s3",
            )
            world.proxy.reset()
            bench.say(f"S3: strongroom backup, {n} upload thread{'s' if n > 1 else ''}")
            m = bench.run(
                f"strongroom backup (s3, {n} upload threads)",
                bench.sr("backup", url, "--repo", repo, "--key-file", key, upload_workers=n),
                env=env,
                rss=True,
                log="s3",
            )
            counts = Counter(world.proxy.counts)
            counts["total"] = sum(counts[k] for k in KINDS)
            objects, stored, folders = world.objects(prefix)
            raw = _raw_bytes(world, prefix)
            run = {
                "upload_workers": n,
                "default": n == UPLOAD_WORKERS,
                "seconds": round(m.seconds, 2),
                "cpu_seconds": round(m.cpu_seconds, 2),
                "load": round(m.load, 2),
                "peak_rss_bytes": m.hwm_kib * 1024,
                "raw_bytes": raw,
                "requests": dict(counts),
                "requests_per_gb": per_gb(counts, raw),
                "objects": objects,
                "objects_by_folder": dict(folders),
                "stored_bytes": stored,
                "objects_per_gb": round(objects / (raw / GB), 1) if raw else None,
            }
            runs.append(run)
            bench.say(
                f"  {secs(m.seconds)}, {counts['total']} requests ({counts['PUT']} PUT, "
                f"{counts['GET']} GET, {counts['HEAD']} HEAD, {counts['LIST']} LIST), "
                f"{objects} objects, {mb(stored)}"
            )
            if n == UPLOAD_WORKERS and not restore:
                restore = _restore(bench, world, repo, key, env, raw)
            world.delete(prefix)
    finally:
        world.stop()
    res.s3 = {"default_upload_workers": UPLOAD_WORKERS, "backups": runs, "restore": restore}


def _raw_bytes(world: S3World, prefix: str) -> int:
    """The backup's raw dump size, from its public manifest in the bucket."""
    page = world.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/backups/")
    for item in page.get("Contents", []):
        if item["Key"].endswith(".json"):
            body = world.client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            return int(json.loads(body)["raw_size"])
    return 0


def _restore(
    bench: Bench, world: S3World, repo: str, key: Path, env: dict[str, str], raw: int
) -> dict[str, Any]:
    name = "restored_s3"
    bench.server.drop_database(name)
    world.proxy.reset()
    bench.say("S3: strongroom restore")
    m = bench.run(
        "strongroom restore (s3)",
        bench.sr(
            "restore",
            "latest",
            "--to",
            bench.server.url(name),
            "--repo",
            repo,
            "--key-file",
            key,
            "--yes",
        ),
        env=env,
        rss=True,
        log="s3",
    )
    bench.server.drop_database(name)
    counts = Counter(world.proxy.counts)
    counts["total"] = sum(counts[k] for k in KINDS)
    bench.say(f"  {secs(m.seconds)}, {counts['total']} requests ({counts['GET']} GET)")
    return {
        "seconds": round(m.seconds, 2),
        "peak_rss_bytes": m.hwm_kib * 1024,
        "requests": dict(counts),
        "requests_per_gb": per_gb(counts, raw),
    }
