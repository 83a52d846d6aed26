"""The verify use case: re-read every chunk, check each hash and the whole-stream checksum,
and record the outcome (kind ``read``) in the repository."""

from __future__ import annotations

import time
from dataclasses import dataclass

from strongroom.errors import BackupForgotten, IntegrityError, StrongroomError
from strongroom.repository.ids import utc_now_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import (
    KIND_READ,
    VerificationRecord,
    record_verification,
)
from strongroom.services.progress import NoProgress, ProgressSink
from strongroom.services.restore import with_progress


@dataclass(frozen=True)
class VerifyResult:
    manifest: Manifest
    ok: bool
    bytes_checked: int
    duration_seconds: float
    problem: str | None = None
    record: VerificationRecord | None = None  # what was recorded (None: not recorded)


def verify_backup(
    repo: Repository,
    manifest: Manifest,
    progress: ProgressSink | None = None,
    *,
    record: bool = True,
) -> VerifyResult:
    """Read the whole backup back; never raises for damage, reports it in the result.

    With ``record`` (the default; the CLI's ``verify`` and ``verify --all`` and the web's
    Verify all come here) the outcome is written as a verification record of kind
    ``read``. A passed read check never makes a backup "verified good" (only a restore
    drill does); a failed one makes it not good. Errors that are not the backup's
    (storage unreachable, wrong key) raise their ``StrongroomError`` and record nothing;
    a backup forgotten (forget, prune) while it was read raises ``BackupForgotten``.
    """
    result = _read_back(repo, manifest, progress or NoProgress())
    if not record:
        return result
    entry = VerificationRecord(
        manifest.backup_id, utc_now_iso(), KIND_READ, result.ok, None, 0, 0, result.problem
    )
    record_verification(repo.storage, entry)
    return VerifyResult(
        manifest, result.ok, result.bytes_checked, result.duration_seconds, result.problem, entry
    )


def _read_back(repo: Repository, manifest: Manifest, progress: ProgressSink) -> VerifyResult:
    clock = time.monotonic()
    checked = 0
    progress.start(f"verify {manifest.backup_id}", manifest.raw_size)
    try:
        # the private section (database name, tables and their statistics) is what a
        # restore verifies against: a backup whose section does not open cannot restore
        repo.private_section(manifest)
        for data in with_progress(repo.read_stream(manifest), progress):
            checked += len(data)
    except IntegrityError as exc:
        return VerifyResult(manifest, False, checked, time.monotonic() - clock, exc.message)
    except BackupForgotten as exc:  # forget + prune ran meanwhile: nothing is damaged
        raise BackupForgotten(
            f"backup {manifest.backup_id} was forgotten (deleted by forget/prune) while it was "
            "being verified"
        ) from exc
    except StrongroomError:
        raise
    finally:
        progress.finish()
    if checked != manifest.raw_size:
        problem = f"backup {manifest.backup_id} read {checked} bytes, expected {manifest.raw_size}"
        return VerifyResult(manifest, False, checked, time.monotonic() - clock, problem)
    return VerifyResult(manifest, True, checked, time.monotonic() - clock)
