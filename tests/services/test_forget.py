"""forget: retention decisions applied to a repository (manifests written by hand)."""

from datetime import UTC, datetime, timedelta

import pytest

from strongroom.errors import BackupNotFound, UsageError
from strongroom.repository.config import ENCRYPTION_NONE
from strongroom.repository.ids import new_backup_id
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import PINS_PREFIX
from strongroom.repository.manifest import STATUS_COMPLETE, ChunkRef, Manifest
from strongroom.repository.pins import is_pinned
from strongroom.repository.repository import Repository
from strongroom.repository.verifications import (
    VERIFICATIONS_PREFIX,
    VerificationRecord,
    record_verification,
)
from strongroom.retention import PRE_RESTORE_TAG, RetentionPolicy
from strongroom.services.forget import (
    SOURCE_CONFIGURATION,
    SOURCE_DEFAULT,
    SOURCE_ENVIRONMENT,
    SOURCE_OPTIONS,
    choose_policy,
    forget,
)
from strongroom.services.pins import pin_backup, unpin_backup
from strongroom.storage.memory import MemoryStorage

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fake_manifest(finished, target="shop", tags=(), chunks=("ab" * 32,)):
    return Manifest(
        backup_id=new_backup_id(finished),
        target=target,
        engine="sqlite",
        engine_version="3",
        tool_version="sqlite3",
        dump_format="sqlite3-database",
        started_at=_iso(finished - timedelta(seconds=5)),
        finished_at=_iso(finished),
        duration_seconds=5.0,
        tags=tuple(tags),
        status=STATUS_COMPLETE,
        created_by="test@host",
        raw_size=100,
        stored_new_bytes=50,
        new_chunk_count=1,
        stream_checksum="0" * 64,
        chunks=tuple(ChunkRef(c, 100) for c in chunks),
        private_sealed={"encoding": "plain", "data": {}},
    )


@pytest.fixture()
def repo():
    storage = MemoryStorage()
    Repository.init(storage, encryption=ENCRYPTION_NONE)
    return Repository.open(storage, KeySource(None, None))


def _daily(repo, days, target="shop", **kw):
    manifests = [fake_manifest(NOW - timedelta(days=d, hours=1), target, **kw) for d in range(days)]
    for m in manifests:
        repo.write_manifest(m)
    return manifests


def _verified(repo, backup_id, ok):
    record_verification(
        repo.storage,
        VerificationRecord(backup_id, _iso(NOW), "restore", ok, 1.0, 2, 0, None if ok else "x"),
    )


def test_dry_run_decides_the_same_and_deletes_nothing(repo):
    _daily(repo, 40)
    _daily(repo, 3, target="other")
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4)
    dry = forget(repo, policy, dry_run=True, now=NOW)
    assert len(repo.backup_ids()) == 43 and dry.forgotten == []
    real = forget(repo, policy, now=NOW)
    assert [(e.manifest, e.decision) for e in dry.entries] == [
        (e.manifest, e.decision) for e in real.entries
    ]
    kept = {e.manifest.backup_id for e in real.kept}
    assert set(repo.backup_ids()) == kept
    assert set(real.forgotten) == {e.manifest.backup_id for e in real.to_forget}
    # Sat 21 Nov: days 21..15, then the newest of the ISO weeks starting 2 Nov and 26 Oct
    assert len([e for e in real.kept if e.manifest.target == "shop"]) == 9
    assert all(e.decision.reasons for e in real.kept)
    newest = max(real.kept, key=lambda e: e.manifest.finished_at)
    assert newest.decision.reasons == ("daily 1 of 7", "weekly 1 of 4")


def test_target_limits_what_is_forgotten(repo):
    _daily(repo, 5)
    others = _daily(repo, 5, target="other")
    result = forget(repo, RetentionPolicy(keep_last=1), target="shop", now=NOW)
    assert len(result.forgotten) == 4
    assert {m.backup_id for m in others} <= set(repo.backup_ids())


def test_pinned_backups_stay_until_unpinned(repo):
    manifests = _daily(repo, 5)
    oldest = manifests[-1]
    change = pin_backup(repo, oldest.backup_id[:12])
    assert change.changed and not pin_backup(repo, oldest.backup_id).changed
    result = forget(repo, RetentionPolicy(keep_last=1), now=NOW)
    kept = {e.manifest.backup_id: e.decision.reasons for e in result.kept}
    assert kept[oldest.backup_id] == ("pinned",)
    assert unpin_backup(repo, oldest.backup_id).changed
    assert not unpin_backup(repo, oldest.backup_id).changed
    forget(repo, RetentionPolicy(keep_last=1), now=NOW)
    assert repo.backup_ids() == [manifests[0].backup_id]
    with pytest.raises(BackupNotFound):
        pin_backup(repo, oldest.backup_id)


def test_a_backup_pinned_after_the_decision_is_spared(repo):
    class LateStorage(MemoryStorage):
        """Hides pins from the listing, as if pinned after forget looked."""

        def list(self, prefix):
            return iter([]) if prefix == PINS_PREFIX else super().list(prefix)

    storage = LateStorage()
    Repository.init(storage, encryption=ENCRYPTION_NONE)
    late = Repository.open(storage, KeySource(None, None))
    manifests = _daily(late, 3)
    pin_backup(late, manifests[-1].backup_id)
    result = forget(late, RetentionPolicy(keep_last=1), now=NOW)
    assert result.spared == [manifests[-1].backup_id]
    assert manifests[-1].backup_id in late.backup_ids()


def test_the_newest_verified_good_backup_of_each_target_stays(repo):
    manifests = _daily(repo, 6)  # newest first
    _verified(repo, manifests[4].backup_id, ok=True)
    _verified(repo, manifests[3].backup_id, ok=False)
    _verified(repo, manifests[5].backup_id, ok=True)  # older than another good one
    result = forget(repo, RetentionPolicy(keep_last=1), now=NOW)
    reasons = {e.manifest.backup_id: e.decision.reasons for e in result.kept}
    assert reasons == {
        manifests[0].backup_id: ("last 1 of 1",),
        manifests[4].backup_id: ("newest verified good",),
    }
    # forgetting removed the verification records of the forgotten backups
    left = {key.split("/")[1] for key in repo.storage.list(VERIFICATIONS_PREFIX)}
    assert left == {manifests[4].backup_id}


def test_young_pre_restore_backups_stay(repo):
    young = fake_manifest(NOW - timedelta(days=6), tags=(PRE_RESTORE_TAG,))
    old = fake_manifest(NOW - timedelta(days=8), tags=(PRE_RESTORE_TAG,))
    newest = fake_manifest(NOW - timedelta(hours=1))
    for m in (young, old, newest):
        repo.write_manifest(m)
    forget(repo, RetentionPolicy(keep_last=1, keep_safety=1), now=NOW)
    assert set(repo.backup_ids()) == {young.backup_id, newest.backup_id}


def test_forgetting_removes_a_forgotten_backups_pin_and_records(repo):
    manifests = _daily(repo, 2)
    old = manifests[1].backup_id
    _verified(repo, old, ok=False)
    forget(repo, RetentionPolicy(keep_last=1), now=NOW)
    assert old not in repo.backup_ids()
    assert not list(repo.storage.list(f"{VERIFICATIONS_PREFIX}{old}/"))
    assert not is_pinned(repo.storage, old)


def test_policy_options_then_configuration_then_environment_then_default():
    given = RetentionPolicy(keep_last=3)
    configured = RetentionPolicy(keep_monthly=6)
    env = {"BACKUP_RETENTION_DAYS": "14"}
    assert choose_policy(given, env, configured) == (given, SOURCE_OPTIONS)
    assert choose_policy(None, env, configured) == (configured, SOURCE_CONFIGURATION)
    policy, source = choose_policy(None, env)
    assert source == SOURCE_ENVIRONMENT and policy.keep_within == timedelta(days=14)
    assert policy.describe() == "within 14d"
    policy, source = choose_policy(None, {"BACKUP_RETENTION_DAYS": " "})
    assert source == SOURCE_DEFAULT
    assert (policy.keep_daily, policy.keep_weekly, policy.keep_monthly) == (7, 4, 12)
    assert choose_policy(None, {}, timezone="Europe/Berlin")[0].timezone == "Europe/Berlin"
    for bad in ("ten", "0", "-3", "1.5"):
        with pytest.raises(UsageError, match="BACKUP_RETENTION_DAYS"):
            choose_policy(None, {"BACKUP_RETENTION_DAYS": bad})


def test_retention_days_keeps_what_is_young_enough(repo):
    _daily(repo, 20)
    policy, _ = choose_policy(None, {"BACKUP_RETENTION_DAYS": "10"})
    result = forget(repo, policy, now=NOW)
    assert len(result.kept) == 10 and len(result.forgotten) == 10
    assert all(e.decision.reasons == ("within 10d",) for e in result.kept)


def test_a_damaged_manifest_is_kept_and_reported_and_the_others_are_decided(repo, caplog):
    manifests = _daily(repo, 10)
    broken = manifests[-1].backup_id  # the oldest: retention would forget it
    repo.storage.put(f"backups/{broken}.json", b'{"format": "strongroom-manifest", "vers')
    fresh = Repository.open(repo.storage, KeySource(None, None))
    with caplog.at_level("WARNING", "strongroom.audit"):
        result = forget(fresh, RetentionPolicy(keep_last=2), now=NOW)
    assert [d.backup_id for d in result.damaged] == [broken]
    assert "not valid JSON" in result.damaged[0].reason
    assert repo.storage.exists(f"backups/{broken}.json")
    assert len(result.forgotten) == 7 and broken not in result.forgotten
    assert sorted(fresh.backup_ids()) == sorted([broken, *(m.backup_id for m in manifests[:2])])
    assert any(f"kept backup {broken}" in r.getMessage() for r in caplog.records)
