"""stats: sizes and counts per target equal the sums computed from the objects."""

import pytest

from strongroom.engines.sqlite import SqliteEngine
from strongroom.repository.keys import KeySource
from strongroom.repository.layout import chunk_key
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.stats import repository_stats
from strongroom.storage.memory import MemoryStorage
from tests.helpers import make_sqlite_db


@pytest.fixture()
def repo(tmp_path):
    storage = MemoryStorage()
    Repository.init(storage, key_file=tmp_path / "k")
    return Repository.open(storage, KeySource(key_file=tmp_path / "k"))


def _expected(repo, manifests):
    plain = {r.chunk_id: r.size for m in manifests for r in m.chunks}
    return (
        len(manifests),
        sum(m.raw_size for m in manifests),
        sum(plain.values()),
        sum(repo.chunks.stored_size(c) for c in plain),  # blob lengths in packs (issue 19)
    )


def test_stats_equal_the_sums(repo, tmp_path):
    shop = make_sqlite_db(tmp_path / "shop.db")
    crm = make_sqlite_db(tmp_path / "crm.db", users=300, orders=500, seed=9)
    shop_backups = [run_backup(repo, SqliteEngine(str(shop))).manifest]
    shop_backups.append(run_backup(repo, SqliteEngine(str(shop))).manifest)
    crm_backups = [run_backup(repo, SqliteEngine(str(crm))).manifest]
    repo.storage.put(chunk_key("ee" * 32), b"unreferenced!")

    result = repository_stats(repo)
    by_target = {t.target: t for t in result.targets}
    for name, manifests in (("shop", shop_backups), ("crm", crm_backups)):
        t = by_target[name]
        assert (t.backups, t.raw_bytes, t.unique_bytes, t.stored_bytes) == _expected(
            repo, manifests
        )
        assert t.oldest == manifests[0].finished_at and t.newest == manifests[-1].finished_at
        assert t.dedup_ratio == pytest.approx(t.raw_bytes / t.unique_bytes)
    total = result.total
    assert (total.backups, total.raw_bytes, total.unique_bytes, total.stored_bytes) == _expected(
        repo, shop_backups + crm_backups
    )
    assert by_target["shop"].dedup_ratio == pytest.approx(2.0)  # the same data twice
    everything = repo.chunks.stored_ids()  # packed and loose chunks (issue 19)
    assert result.all_chunks == len(everything)
    assert result.all_chunk_bytes == sum(repo.chunks.stored_size(c) for c in everything)
    assert result.all_chunk_bytes - total.stored_bytes == len(b"unreferenced!")
    packs = list(repo.storage.list("packs/"))
    assert (result.packs, result.loose_chunks) == (len(packs), 1)
    assert result.pack_bytes == sum(repo.storage.size(k) for k in packs)
    assert result.index_objects == len(list(repo.storage.list("index/"))) == 2  # shop, crm
    assert result.objects == result.packs + result.index_objects + 1

    only = repository_stats(repo, target="crm")
    assert [t.target for t in only.targets] == ["crm"] and only.all_chunks is None
    assert only.total.stored_bytes == by_target["crm"].stored_bytes


def test_stats_of_an_empty_repository(repo):
    result = repository_stats(repo)
    assert result.targets == [] and result.total.backups == 0
    assert result.total.dedup_ratio == 0.0 and result.all_chunks == 0
