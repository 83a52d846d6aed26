"""strongroom restore-point NAME --to URL | --target NAME, and restore-point --list."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from strongroom.cli.options import (
    ConfigOption,
    JsonOption,
    KeyFileOption,
    RepoOption,
    S3EndpointOption,
    location,
)
from strongroom.cli.output import stdout
from strongroom.errors import UsageError
from strongroom.services.restore_points import make_restore_point, restore_points
from strongroom.services.settings_sources import Sources


def _cluster_url(
    to: str | None,
    target: str | None,
    config: str | None,
    repo: str | None,
    key_file: Path | None,
    s3_endpoint: str | None,
) -> str:
    if (to is None) == (target is None):
        raise UsageError("say which cluster: --to postgresql://… or --target NAME")
    if to is not None:
        return to
    settings = Sources.load(config).configured(repo, key_file, s3_endpoint)
    targets = settings.targets if settings is not None else {}
    if target not in targets:
        raise UsageError(f"no target named {target!r} is configured (strongroom.toml [targets])")
    return targets[str(target)].database_url(os.environ)


def restore_point(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The restore point's name (letters, digits, ._-)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="The cluster: postgresql://… (a superuser's connection)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="The cluster of this configured target.")
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the restore points the repository records.")
    ] = False,
    json_: JsonOption = False,
    config: ConfigOption = None,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
) -> None:
    """Create a named restore point on a PostgreSQL cluster that archives to this
    repository (then switch WAL so it is archived now), and record it; restore
    --to-restore-point NAME recovers to it. With --list: the recorded points."""
    repository = location(repo, key_file, s3_endpoint, config).open()
    if list_:
        if name is not None or to is not None or target is not None:
            raise UsageError("--list goes without NAME, --to and --target")
        points = restore_points(repository)
        if json_:
            stdout.print_json(json.dumps([p.to_dict() for p in points]))
            return
        if not points:
            stdout.print("no restore points recorded (strongroom restore-point NAME --to URL)")
            return
        table = Table("name", "time", "LSN", "timeline", "stream")
        for point in points:
            table.add_row(point.name, point.time, point.lsn, str(point.timeline), point.stream)
        stdout.print(table)
        return
    if name is None:
        raise UsageError("give the restore point's NAME (or --list)")
    url = _cluster_url(to, target, config, repo, key_file, s3_endpoint)
    point = make_restore_point(repository, url, name)
    if json_:
        stdout.print_json(json.dumps(point.to_dict()))
        return
    stdout.print(
        f"restore point {point.name} at LSN {point.lsn}, timeline {point.timeline}, "
        f"{point.time} (stream {point.stream}); WAL switched so it is archived now"
    )
