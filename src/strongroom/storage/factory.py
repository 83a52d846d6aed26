"""Turn a repository location string into a Storage."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from strongroom.errors import UsageError
from strongroom.redaction import redact_url
from strongroom.storage.base import Storage
from strongroom.storage.local import LocalStorage
from strongroom.storage.memory import MemoryStorage
from strongroom.storage.retry import RetryingStorage, check_deadline, storage_deadline

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_memory: dict[str, MemoryStorage] = {}
_memory_lock = threading.Lock()


def _open_s3(location: str, s3_endpoint: str | None, deadline: float | None) -> Storage:
    parts = urlsplit(location)
    shown = redact_url(location)
    if "@" in parts.netloc:
        raise UsageError(
            f"S3 location {shown} must not contain credentials; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
        )
    bucket = parts.netloc
    if not bucket or ":" in bucket:
        raise UsageError(f"S3 location {shown} has no bucket name; use s3://BUCKET[/PREFIX]")
    from strongroom.storage.s3 import S3Storage  # boto3 is slow to import: only when used

    if deadline is None:
        deadline = storage_deadline()
    else:  # from [repository] storage_deadline ("inf" and "nan" parse as floats)
        deadline = check_deadline(deadline, "storage_deadline")
    inner = S3Storage(bucket, unquote(parts.path), endpoint_url=s3_endpoint, deadline=deadline)
    return RetryingStorage(inner, deadline=deadline)


def _open_memory(location: str) -> MemoryStorage:
    name = location[len("memory://") :]
    with _memory_lock:
        storage = _memory.get(name)
        if storage is None:
            storage = _memory[name] = MemoryStorage(name)
        return storage


def _open_file_url(location: str) -> Path:
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"file location {location} must be file:///ABSOLUTE/PATH")
    return Path(unquote(parts.path))


def open_storage(
    location: str, s3_endpoint: str | None = None, *, deadline: float | None = None
) -> Storage:
    """``s3://bucket/prefix`` -> S3 (with retries, each operation within ``deadline``
    seconds, by default ``$STRONGROOM_STORAGE_DEADLINE`` or 60); ``memory://name`` ->
    shared in-memory storage; ``file:///path`` or a plain path -> a local directory."""
    if not location.strip():
        raise UsageError("repository location is empty")
    match = _SCHEME.match(location)
    scheme = match["scheme"].lower() if match else ""
    if scheme == "s3":
        return _open_s3(location, s3_endpoint, deadline)
    if scheme == "memory":
        return _open_memory(location)
    if scheme == "file":
        path = _open_file_url(location)
    elif scheme:
        raise UsageError(
            f"unsupported repository location {redact_url(location)}: "
            "use a directory path, file:///PATH or s3://BUCKET[/PREFIX]"
        )
    else:
        path = Path(location)
    return LocalStorage(path.expanduser().resolve())
