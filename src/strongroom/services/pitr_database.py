"""Point-in-time restore of one database, first half: recover a throwaway cluster from the
base backup and the archived WAL, dump the database from it into the repository as a
logical backup (tags ``pitr`` and ``pitr-base:<id>``), and remove the cluster. The dump
then goes through the normal safe restore (cli/pitr_database_cmd.py). docs/design.md,
"Point-in-time restore of one database"."""

from __future__ import annotations

import errno
import logging
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from strongroom.engines import open_engine
from strongroom.engines.postgresql.physical import RecoveryOutcome
from strongroom.engines.postgresql.throwaway import throwaway_cluster
from strongroom.errors import RecoveryEndedEarly, RestoreFailed
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.services.backup import run_backup
from strongroom.services.pitr import parse_lsn
from strongroom.services.pitr_database_plan import PitrDatabasePlan
from strongroom.services.progress import ProgressSink
from strongroom.services.recovery_plan import ended_early

log = logging.getLogger("strongroom.pitr")

WAL_CONFIG_NAME = "strongroom-wal.toml"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")  # the server's line


@dataclass(frozen=True)
class PitrDump:
    """The dump taken at the moment reached, and how long each step took (seconds)."""

    manifest: Manifest
    outcome: RecoveryOutcome
    members: int  # files and folders of the base backup laid down
    lay_down_seconds: float
    recovery_seconds: float
    dump_seconds: float


def recover_and_dump(
    repo: Repository,
    plan: PitrDatabasePlan,
    *,
    strongroom: list[str],
    wal_config: str | None,
    wal_config_text: str | None,
    roles: tuple[str, ...],
    step: Callable[[str], None] = lambda _line: None,
    progress: ProgressSink | None = None,
) -> PitrDump:
    """Lay the plan's base backup down in a throwaway cluster, recover it to the plan's
    moment, dump ``plan.database`` from it into ``repo`` (filed under the destination's
    target) and remove the cluster, whatever happens. Its ``restore_command`` is
    ``strongroom wal-fetch --config C --stream S %f %p``: ``strongroom`` the command that
    runs this strongroom, ``C`` ``wal_config`` or else a file in the cluster's folder
    holding ``wal_config_text`` (it names the repository and key file, never a key);
    ``roles`` are tried to find the cluster's superuser; ``step`` hears one line per step.
    Raises ``RestoreFailed`` (the server's reason) when recovery stops, and what the
    backup raises."""
    with throwaway_cluster(str(plan.facts["server_version"]), plan.os_user) as cluster:
        step(f"throwaway cluster in {cluster.folder} (as {plan.os_user.name}, port {cluster.port})")
        clock = time.monotonic()
        try:
            members = cluster.lay_down(repo.read_stream(plan.base))
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            raise RestoreFailed(
                f"no space left in {tempfile.gettempdir()} for the throwaway cluster (the base "
                f"backup is {plan.base.raw_size / 2**20:.0f} MiB unpacked, and recovery needs its "
                "WAL beside it): point TMPDIR at a folder with room"
            ) from None
        if wal_config is None:
            wal_config = str(cluster.write_file(WAL_CONFIG_NAME, wal_config_text or ""))
        command = [*strongroom, "wal-fetch", "--snapshots", "--config", wal_config]
        command += ["--stream", str(plan.facts["stream"])]
        cluster.configure(" ".join(shlex.quote(p) for p in command) + " %f %p", plan.recovery)
        laid = time.monotonic() - clock
        step(f"laid down    {members} files of base backup {plan.base.backup_id} ({laid:.1f} s)")
        clock = time.monotonic()
        outcome = cluster.start()
        recovered = time.monotonic() - clock
        if plan.recovery.time is None and plan.recovery.lsn is None:  # latest: all of it?
            redo = REDO_DONE.search(outcome.stop or "")
            early = ended_early(plan.wal, parse_lsn(redo[1]) if redo else None)
            if early is not None:
                raise RecoveryEndedEarly(early)
        reached = outcome.reached or "no transaction replayed after the base backup"
        step(f"recovered to {reached} ({recovered:.1f} s)")
        clock = time.monotonic()
        engine = open_engine(cluster.connect_url(plan.database, (*roles, plan.os_user.name)))
        report = run_backup(
            repo,
            engine,
            target=plan.destination.name,
            tags=plan.tags,
            progress=progress,
        )
        dumped = time.monotonic() - clock
        step(f"dumped       {plan.database} as backup {report.manifest.backup_id} ({dumped:.1f} s)")
    log.info(
        "point-in-time dump %s of %s: lay down %.1f s, recovery %.1f s, dump %.1f s",
        report.manifest.backup_id,
        plan.database,
        laid,
        recovered,
        dumped,
    )
    return PitrDump(report.manifest, outcome, members, laid, recovered, dumped)
