"""Hostile cases for WAL retention (prune), status and the spool: what must never delete
WAL a retained base backup still needs (docs/design.md, "WAL status, continuity and
retention"). Synthetic repositories built the way tests/services/test_wal_status.py
builds them (segments pushed through repository/logs.py, manifests as ``backup
--physical`` writes them); no server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from strongroom.engines.postgresql import timelines as tl
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import manifest_key
from strongroom.repository.repository import Repository
from strongroom.services.check import check_repository
from strongroom.services.prune import prune
from strongroom.services.wal_retention import plan_wal_retention
from strongroom.services.wal_status import wal_status
from tests.services.test_wal_status import (
    T0,
    _names,
    base_backup,
    push,
    push_range,
    repo,
)

__all__ = ["repo"]


def _rewrite_facts(repository: Repository, backup_id: str, **changes: object) -> None:
    """Change a base backup's recorded facts (what another pg_basebackup would record)."""
    from strongroom.repository.manifest import PrivateSection, seal_private

    manifest = repository.load_manifest(backup_id)
    private = repository.private_section(manifest)
    state = dict(private.engine_state or {})
    facts = dict(state["physical"])
    facts.update(changes)
    sealed = seal_private(
        PrivateSection(
            database=private.database,
            source=private.source,
            tables=private.tables,
            engine_state={"physical": facts},
        ),
        repository.keyring.sealer(for_reading=False),
    )
    from dataclasses import replace

    repository.storage.put(
        manifest_key(backup_id), replace(manifest, private_sealed=sealed).to_json()
    )


def _fresh(repository: Repository, tmp_path: Path) -> Repository:
    return Repository.open(repository.storage, KeySource(key_file=tmp_path / "repo.key"))


def test_a_standby_backup_across_a_timeline_switch_keeps_its_start_on_the_old_timeline(
    repo: Repository, tmp_path: Path
) -> None:
    """pg_basebackup from a standby whose upstream was promoted during the backup: its
    backup_manifest has two WAL-Ranges (timeline 1 from the start, timeline 2 to the end);
    strongroom records the last range's timeline and the first range's start LSN. Recovery
    begins on timeline 1 (segments 5..7) and goes on on timeline 2 from the switch (8):
    prune must keep 5..7 of timeline 1, and status must see no gap."""
    push_range(repo, 1, 1, 7, T0)
    push(repo, tl.name_of(1, 8) + ".partial", T0 + timedelta(minutes=8))
    push(repo, "00000002.history", T0 + timedelta(minutes=8))
    push_range(repo, 2, 8, 12, T0)
    b = base_backup(repo, 2, 5, T0 + timedelta(minutes=9))  # start 0/5000028 on timeline 1
    _rewrite_facts(repo, b, timeline=2)
    repo = _fresh(repo, tmp_path)
    stream = wal_status(repo).streams[0]
    assert not stream.gaps, stream.gaps
    (line,) = plan_wal_retention(repo).streams
    assert {f.file.name for f in line.delete} == {tl.name_of(1, n) for n in range(1, 5)}
    prune(repo, wait=0)
    assert {tl.name_of(1, n) for n in range(5, 8)} <= _names(repo)
    assert check_repository(repo).ok
