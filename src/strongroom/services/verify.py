"""The verify use case: re-read every chunk, check each hash and the whole-stream checksum."""

from __future__ import annotations

import time
from dataclasses import dataclass

from strongroom.errors import IntegrityError, StrongroomError
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.progress import NoProgress, ProgressSink
from strongroom.services.restore import with_progress


@dataclass(frozen=True)
class VerifyResult:
    manifest: Manifest
    ok: bool
    bytes_checked: int
    duration_seconds: float
    problem: str | None = None


def verify_backup(
    repo: Repository, manifest: Manifest, progress: ProgressSink | None = None
) -> VerifyResult:
    """Read the whole backup back; never raises for damage, reports it in the result."""
    progress = progress or NoProgress()
    clock = time.monotonic()
    checked = 0
    progress.start(f"verify {manifest.backup_id}", manifest.raw_size)
    try:
        for data in with_progress(repo.read_stream(manifest), progress):
            checked += len(data)
    except IntegrityError as exc:
        return VerifyResult(manifest, False, checked, time.monotonic() - clock, exc.message)
    except StrongroomError:
        raise
    finally:
        progress.finish()
    if checked != manifest.raw_size:
        problem = f"backup {manifest.backup_id} read {checked} bytes, expected {manifest.raw_size}"
        return VerifyResult(manifest, False, checked, time.monotonic() - clock, problem)
    return VerifyResult(manifest, True, checked, time.monotonic() - clock)
