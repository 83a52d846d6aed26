"""strongroom restore --to-datadir: point-in-time recovery of a PostgreSQL cluster.

Called by ``restore`` (cli/restore_cmd.py) when ``--to-datadir`` is given."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from strongroom.cli.options import location
from strongroom.cli.output import human_seconds, stdout
from strongroom.errors import RecoveryEndedEarly, UsageError

WAL_CONFIG_NAME = "strongroom-wal.toml"

# restore's options for the targets it adds (cli/restore_cmd.py takes them as they are)
ToXidOption = Annotated[
    str | None,
    typer.Option(
        "--to-xid", help="With --to-datadir: recover up to this transaction's commit (inclusive)."
    ),
]
ToRestorePointOption = Annotated[
    str | None,
    typer.Option(
        "--to-restore-point",
        metavar="NAME",
        help="With --to-datadir: recover to this named restore point (strongroom restore-point).",
    ),
]
ToTimelineOption = Annotated[
    str | None,
    typer.Option(
        "--to-timeline",
        metavar="latest|current|N",
        help="With --to-datadir: the timeline recovery follows (default latest).",
    ),
]
PITR_ONLY = "--to-time, --to-lsn, --to-xid, --to-restore-point, --to-timeline, --start and --port"
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def strongroom_command() -> list[str]:
    """How the server runs this strongroom: the ``strongroom`` script that runs now, else
    this interpreter with ``-m strongroom.cli.entry`` (the light path for the WAL commands)."""
    script = Path(sys.argv[0])
    if script.name == "strongroom" and script.is_file():
        return [str(script.resolve())]
    return [sys.executable, "-m", "strongroom.cli.entry"]


def wal_config_text(repo: str | None, key_file: Path | None, s3_endpoint: str | None) -> str:
    """``strongroom-wal.toml`` for the data directory: the repository, the key file and
    the endpoint ``restore_command`` needs; never a key, passphrase or password."""
    found = location(repo, key_file, s3_endpoint, None)
    if not found.location:
        raise UsageError("no repository given: use --repo, STRONGROOM_REPO or --config")
    where = found.location
    if "://" not in where:
        where = str(Path(where).resolve())
    lines = [
        "# written by strongroom restore: the repository restore_command reads",
        "[repository]",
        f"location = {_toml(where)}",
    ]
    if found.key_file is not None:
        lines.append(f"key_file = {_toml(str(Path(found.key_file).resolve()))}")
    if found.s3_endpoint:
        lines.append(f"s3_endpoint = {_toml(found.s3_endpoint)}")
    if found.passphrase:
        lines.append('passphrase_env = "STRONGROOM_PASSPHRASE"')
        stdout.print(
            "note: this repository opens with a passphrase: the server needs "
            "STRONGROOM_PASSPHRASE in its environment for restore_command"
        )
    return "\n".join(lines) + "\n"


def restore_to_datadir(
    backup_id: str | None,
    datadir: Path,
    *,
    to_time: str | None,
    to_lsn: str | None,
    target: str | None,
    to_xid: str | None = None,
    to_restore_point: str | None = None,
    to_timeline: str | None = None,
    start: bool,
    port: int | None,
    config: str | None,
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
) -> None:
    """Lay a base backup down in ``datadir`` and configure recovery to the time, the LSN,
    the transaction, the restore point or (none) the end of the archived WAL, after
    checking the archive holds every segment on the way (``plan_recovery``); with
    ``start``, run it and report (``RecoveryEndedEarly`` when it stopped short)."""
    # psycopg and the PITR services only when a restore needs them (not for restore --help)
    from strongroom.engines.postgresql.physical import RecoveryTarget, prepare_datadir
    from strongroom.engines.postgresql.recovery_points import check_restore_point_name
    from strongroom.services.pitr import (
        choose_base_backup,
        parse_lsn,
        parse_target_time,
        physical_facts,
        refuse_datadir_inside,
        restore_physical,
        run_recovery,
    )
    from strongroom.services.recovery_plan import (
        ended_early,
        parse_timeline,
        parse_xid,
        plan_recovery,
    )
    from strongroom.services.restore_points import resolve_restore_point, stopped_elsewhere

    given = [t for t in (to_time, to_lsn, to_xid, to_restore_point) if t is not None]
    if len(given) > 1:
        raise UsageError("choose one of --to-time, --to-lsn, --to-xid and --to-restore-point")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port (1 to 65535)")
    if start and os.geteuid() == 0:
        raise UsageError(
            "PostgreSQL does not run as root: run restore --start as the cluster's OS user "
            "(or restore without --start and start it yourself)"
        )
    when = parse_target_time(to_time) if to_time is not None else None
    lsn = parse_lsn(to_lsn) if to_lsn is not None else None
    xid = parse_xid(to_xid) if to_xid is not None else None
    timeline = parse_timeline(to_timeline) if to_timeline is not None else "latest"
    if to_restore_point is not None:
        check_restore_point_name(to_restore_point)
    repository = location(repo, key_file, s3_endpoint, config).open()
    stream, point = None, None
    if to_restore_point is not None:
        named = None  # a base backup named decides the stream of a name in several
        if backup_id not in (None, "latest"):
            named = str(physical_facts(repository, repository.resolve(str(backup_id)))["stream"])
        point = resolve_restore_point(repository, to_restore_point, named)
        lsn, stream = parse_lsn(point.lsn), point.stream
    manifest = choose_base_backup(repository, backup_id, target, when, lsn, xid=xid, stream=stream)
    facts = physical_facts(repository, manifest)
    plan = plan_recovery(repository, facts, timeline=timeline, target_lsn=lsn, target_time=when)
    recovery = RecoveryTarget(
        time=when.isoformat(sep=" ") if when is not None else None,
        lsn=to_lsn.strip() if to_lsn is not None else None,
        xid=str(xid) if xid is not None else None,
        name=to_restore_point,
        timeline=timeline,
    )
    datadir = datadir.resolve()
    if config:
        wal_file, wal_text = Path(config).resolve(), None
    else:
        wal_file = datadir / WAL_CONFIG_NAME
        wal_text = wal_config_text(repo, key_file, s3_endpoint)
    # --snapshots: the newest WAL of a lost host may exist only as wal-receive's snapshot
    command = [*strongroom_command(), "wal-fetch", "--snapshots", "--config", str(wal_file)]
    command += ["--stream", str(facts["stream"])]
    restore_command = " ".join(shlex.quote(part) for part in command) + " %f %p"
    refuse_datadir_inside(datadir, location(repo, key_file, s3_endpoint, config).location)
    prepare_datadir(datadir)  # a folder that will not do is refused before anything is said
    stdout.print(
        f"restoring base backup {manifest.backup_id} (ended {facts['stop_time']}, LSN "
        f"{facts['stop_lsn']}, timeline {facts['timeline']}) into {datadir}"
    )
    report = restore_physical(
        repository,
        manifest,
        datadir,
        target=recovery,
        restore_command=restore_command,
        port=port,
    )
    if wal_text is not None:
        fd = os.open(wal_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(wal_text)
    stdout.print(f"  laid down    {report.members} files in {human_seconds(report.seconds)}")
    stdout.print(f"  recovery to  {recovery.describe()}")
    stdout.print(f"  WAL          {plan.describe()}: all archived")
    if not start:
        stdout.print(f"  start it with: pg_ctl -D {shlex.quote(str(datadir))} start")
        return
    outcome = run_recovery(str(facts["server_version"]), datadir)
    if point is not None:
        redo = _REDO_DONE.search(outcome.log_file.read_text(errors="replace"))
        other = stopped_elsewhere(point, parse_lsn(redo[1]) if redo else None)
        if other is not None:
            raise RecoveryEndedEarly(f"{other} (the cluster runs; see {outcome.log_file})")
    if recovery.setting() is None:
        redo = _REDO_DONE.search(outcome.stop or "")
        early = ended_early(plan, parse_lsn(redo[1]) if redo else None)
        if early is not None:
            raise RecoveryEndedEarly(f"{early} (the cluster runs; see {outcome.log_file})")
    stdout.print(f"  recovered to {outcome.reached or 'no transaction replayed after the backup'}")
    if outcome.stop:
        stdout.print(f"  server said  {outcome.stop}")
    stdout.print(f"  running      (log: {outcome.log_file})")
