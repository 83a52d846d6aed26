"""strongroom forget / pin / unpin"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any

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
from strongroom.retention import (
    DEFAULT_KEEP_SAFETY,
    DEFAULT_KEEP_SAFETY_WITHIN,
    RetentionPolicy,
    format_duration,
    parse_duration,
)
from strongroom.services.forget import ForgetEntry, ForgetResult, forget
from strongroom.services.pins import pin_backup, unpin_backup
from strongroom.services.settings_sources import Sources

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="Backup id, prefix, or latest.")]


def _count(flag: str, period: str) -> Any:
    return typer.Option(flag, min=0, metavar="N", help=f"Keep the newest backup of N {period}.")


def forget_cmd(
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", min=0, metavar="N", help="Keep the N newest.")
    ] = None,
    keep_hourly: Annotated[int | None, _count("--keep-hourly", "hours")] = None,
    keep_daily: Annotated[int | None, _count("--keep-daily", "days")] = None,
    keep_weekly: Annotated[int | None, _count("--keep-weekly", "ISO weeks")] = None,
    keep_monthly: Annotated[int | None, _count("--keep-monthly", "months")] = None,
    keep_yearly: Annotated[int | None, _count("--keep-yearly", "years")] = None,
    keep_within: Annotated[
        str | None,
        typer.Option(
            "--keep-within", metavar="DURATION", help="Keep all younger than this: 30d, 12h, 1y2m."
        ),
    ] = None,
    keep_tag: Annotated[
        list[str] | None,
        typer.Option("--keep-tag", metavar="TAG", help="Keep backups with this tag (repeatable)."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            help="Time zone of hours/days/weeks (IANA name; default: the configuration's "
            "timezone, else UTC).",
        ),
    ] = None,
    keep_safety: Annotated[
        int,
        typer.Option(
            "--keep-safety",
            min=0,
            metavar="N",
            help="Safety (pre-restore) backups: keep the N newest of each target.",
        ),
    ] = DEFAULT_KEEP_SAFETY,
    keep_safety_within: Annotated[
        str,
        typer.Option(
            "--keep-safety-within",
            metavar="DURATION",
            help="Safety (pre-restore) backups: keep all younger than this (0 for none).",
        ),
    ] = format_duration(DEFAULT_KEEP_SAFETY_WITHIN),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the decisions; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Forget backups a retention policy does not keep (prune frees their space).

    Without --keep options: the configured target's retention (--target, or the only
    target of strongroom.toml), else BACKUP_RETENTION_DAYS=N (or RETENTION_DAYS=N) keeps N
    days, else 7 daily, 4 weekly, 12 monthly.
    Always kept: pinned backups and each target's newest verified-good backup.
    Safety (pre-restore) backups fill none of the policy's slots: their own rule keeps the
    newest --keep-safety (3) of each target, all younger than --keep-safety-within (7d),
    and the one `rollback` would restore.
    """
    counts = (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    given_any = any(c is not None for c in counts) or keep_within is not None or bool(keep_tag)
    try:
        within = parse_duration(keep_within) if keep_within is not None else None
        given = RetentionPolicy(
            keep_last=keep_last,
            keep_hourly=keep_hourly,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
            keep_yearly=keep_yearly,
            keep_within=within,
            keep_tags=frozenset(keep_tag or ()),
            timezone=timezone or "UTC",
        )
        safety_within = (
            None if keep_safety_within.strip() == "0" else parse_duration(keep_safety_within)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if given_any and given.is_empty():
        raise UsageError("every --keep option given is 0: give at least one rule that keeps")
    sources = Sources.load(config)
    policy, source, target = sources.retention(given if given_any else None, target, timezone)
    policy = replace(policy, keep_safety=keep_safety, keep_safety_within=safety_within)
    repository = sources.location(repo, key_file, s3_endpoint).open()
    result = forget(repository, policy, source=source, target=target, dry_run=dry_run)
    if as_json:
        stdout.print_json(json.dumps(_as_json(result)))
    else:
        _print(result)


def _entry_json(entry: ForgetEntry) -> dict[str, Any]:
    m = entry.manifest
    return {
        "id": m.backup_id,
        "target": m.target,
        "finished_at": m.finished_at,
        "tags": list(m.tags),
        "action": "keep" if entry.keep else "forget",
        "reasons": list(entry.decision.reasons),
    }


def _as_json(result: ForgetResult) -> dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "policy": {
            "description": result.policy.describe(),
            "source": result.policy_source,
            "safety": result.policy.describe_safety(),
        },
        "backups": [_entry_json(e) for e in _newest_first(result.entries)],
        "kept": len(result.kept),
        "to_forget": len(result.to_forget),
        "deleted": result.forgotten,
        "spared": result.spared,
    }


def _newest_first(entries: list[ForgetEntry]) -> list[ForgetEntry]:
    by_time = sorted(entries, key=lambda e: (e.manifest.finished_at, e.manifest.backup_id))
    return sorted(reversed(by_time), key=lambda e: e.manifest.target)  # stable: per target


def _print(result: ForgetResult) -> None:
    stdout.print(f"policy: {result.policy.describe()} (from {result.policy_source})")
    stdout.print(f"safety backups (pre-restore): {result.policy.describe_safety()}")
    if not result.entries:
        stdout.print("no backups")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ACTION", "ID", "TARGET", "FINISHED", "TAGS", "REASONS"):
        table.add_column(column)
    for entry in _newest_first(result.entries):
        m = entry.manifest
        table.add_row(
            "keep" if entry.keep else "forget",
            m.backup_id,
            m.target,
            m.finished_at,
            ",".join(m.tags) or "-",
            ", ".join(entry.decision.reasons) or "-",
        )
    stdout.print(table)
    kept, going = len(result.kept), len(result.to_forget)
    if result.dry_run:
        stdout.print(f"{kept} kept, {going} would be forgotten (dry run: nothing was deleted)")
        return
    stdout.print(f"{kept} kept, {len(result.forgotten)} forgotten")
    for backup_id in result.spared:
        stdout.print(f"{backup_id} was pinned meanwhile: not forgotten")
    if result.forgotten:
        stdout.print("run `strongroom prune` to free the space they used")


def pin(
    backup_id: IdArgument,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Pin a backup: no retention policy will forget it until it is unpinned."""
    change = pin_backup(location(repo, key_file, s3_endpoint, config).open(), backup_id)
    state = "pinned" if change.changed else "was already pinned"
    stdout.print(f"{change.backup_id} ({change.target}) {state}")


def unpin(
    backup_id: IdArgument,
    repo: RepoOption = None,
    key_file: KeyFileOption = None,
    s3_endpoint: S3EndpointOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a pin: the backup is subject to the retention policy again."""
    change = unpin_backup(location(repo, key_file, s3_endpoint, config).open(), backup_id)
    state = "unpinned" if change.changed else "was not pinned"
    stdout.print(f"{change.backup_id} ({change.target or 'forgotten'}) {state}")
