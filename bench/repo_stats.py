"""What a local strongroom repository holds: bytes and files of its folder, its manifests,
the newest backup's new data, ``strongroom stats --json`` (objects), and the size of the
local index cache per chunk."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

from proc_measure import BenchError
from results_model import GB


def tree_bytes(path: Path) -> int:
    """Total size (st_size) of the regular files under ``path``."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += (Path(dirpath) / name).stat().st_size
    return total


def manifests(repo: Path) -> list[dict[str, Any]]:
    """The repository's (public) manifests, oldest first."""
    docs = [json.loads(p.read_bytes()) for p in (repo / "backups").glob("*.json")]
    return sorted(docs, key=lambda d: (d["finished_at"], d["id"]))


def latest_backup_stats(repo: Path) -> dict[str, int]:
    """raw size, stored new bytes and new plaintext bytes of the newest backup."""
    docs = manifests(repo)
    if not docs:
        raise BenchError(f"no manifest in {repo}")
    newest = docs[-1]
    known = {chunk_id for doc in docs[:-1] for chunk_id, _size in doc["chunks"]}
    new_plain = 0
    for chunk_id, size in newest["chunks"]:
        if chunk_id not in known:
            known.add(chunk_id)
            new_plain += int(size)
    return {
        "raw_bytes": int(newest["raw_size"]),
        "stored_new_bytes": int(newest["stored_new_bytes"]),
        "new_plain_bytes": new_plain,
        "chunks": int(newest["chunk_count"]),
        "new_chunks": int(newest["new_chunk_count"]),
    }


def file_count(path: Path) -> int:
    """Regular files under ``path`` (every object of a local repository, config included)."""
    return sum(len(files) for _dirpath, _dirs, files in os.walk(path))


def stats_json(
    strongroom: Path, repo: Path | str, key: Path, env: dict[str, str]
) -> dict[str, Any]:
    """``strongroom stats --json`` of the repository (objects, packs, pack_bytes, chunks)."""
    run = subprocess.run(
        [str(strongroom), "stats", "--json", "--repo", str(repo), "--key-file", str(key)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if run.returncode != 0:
        raise BenchError(f"strongroom stats failed (exit {run.returncode}): {run.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(run.stdout)
    return data


def objects_per_gb(stats: dict[str, Any], backed_up_bytes: int) -> dict[str, Any]:
    """Objects of the chunk data (packs, index objects, loose chunks) and chunks, per GB
    backed up (``backed_up_bytes``: the raw dump bytes of every backup counted)."""
    gb = backed_up_bytes / GB if backed_up_bytes else 0.0
    total = stats["total"]
    return {
        "backed_up_bytes": backed_up_bytes,
        "backups": int(total["backups"]),
        "objects": int(stats["objects"]),
        "packs": int(stats["packs"]),
        "index_objects": int(stats["index_objects"]),
        "loose_chunks": int(stats["loose_chunks"]),
        "pack_bytes": int(stats["pack_bytes"]),
        "chunks": int(total["chunks"]),
        "objects_per_gb": round(int(stats["objects"]) / gb, 1) if gb else None,
        "chunks_per_gb": round(int(total["chunks"]) / gb, 1) if gb else None,
    }


def repository_id(repo: Path) -> str:
    config: dict[str, Any] = json.loads((repo / "config").read_bytes())
    return str(config["repository_id"])


def index_cache(cache_dir: Path, repo: Path) -> dict[str, Any]:
    """The local index cache of ``repo`` (``$STRONGROOM_CACHE_DIR/<repository id>/``): bytes
    on disk (the SQLite file and its journal files) and the chunk rows it holds."""
    folder = cache_dir / repository_id(repo)
    db_file = folder / "index.sqlite"
    if not db_file.exists():
        return {}
    disk = 0
    for path in folder.glob("index.sqlite*"):
        with suppress(FileNotFoundError):
            disk += path.stat().st_size
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
        chunks = int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])
        loose = int(db.execute("SELECT count(*) FROM loose").fetchone()[0])
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    rows = chunks + loose
    return {
        "disk_bytes": disk,
        "used_bytes": (pages - free) * page_size,
        "chunk_rows": chunks,
        "loose_rows": loose,
        "bytes_per_chunk": round(disk / rows, 1) if rows else None,
    }
