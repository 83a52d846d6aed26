"""Notification channels built from the configuration (secrets read from the environment),
and the one path every backup's outcome is notified through: the scheduler, the web's
"Back up now", the cron endpoint and ``strongroom backup --config`` all call
:func:`notify_backup`, so a failed backup notifies however it was started."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from strongroom.config import ChannelSettings, NotificationSettings
from strongroom.errors import StrongroomError, UsageError
from strongroom.notify.base import Channel, register_url_secrets
from strongroom.notify.dispatch import Notifier
from strongroom.notify.email import EmailChannel
from strongroom.notify.events import Event
from strongroom.notify.slack import SlackChannel
from strongroom.notify.webhook import WebhookChannel
from strongroom.redaction import register_secret
from strongroom.repository.ids import parse_iso
from strongroom.repository.manifest import Manifest
from strongroom.repository.repository import Repository
from strongroom.retention import is_regular
from strongroom.services.backup import BackupReport, BackupRun
from strongroom.services.hooks import HookFailedAfter

log = logging.getLogger("strongroom.notifications")


def _secret(env: Mapping[str, str], name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise UsageError(f"environment variable {name} ({what}) is not set")
    return value


def build_channel(settings: ChannelSettings, env: Mapping[str, str]) -> Channel:
    """The channel a configuration describes; a value that is no URL (e.g. in
    ``SLACK_WEBHOOK_URL``) is a usage error naming where it came from, never the value."""
    try:
        return _build_channel(settings, env)
    except ValueError as exc:  # the channels' own checks (their messages hide secrets)
        fields = {"slack": "webhook_url", "webhook": "url", "email": "host"}
        source = {"slack": settings.webhook_url_env, "webhook": settings.url_env}.get(settings.type)
        where = source or f"notifications.channels {fields[settings.type]}"
        raise UsageError(f"{settings.name or settings.type} channel ({where}): {exc}") from exc


def _build_channel(settings: ChannelSettings, env: Mapping[str, str]) -> Channel:
    if settings.type == "slack":
        url = settings.webhook_url or _secret(env, settings.webhook_url_env, "slack webhook_url")
        register_url_secrets(str(url))
        return SlackChannel(str(url), name=settings.name or "slack")
    if settings.type == "webhook":
        url = settings.url or _secret(env, settings.url_env, "webhook url")
        register_url_secrets(str(url))
        secret = _secret(env, settings.secret_env, "webhook secret")
        if secret:
            register_secret(secret)
        return WebhookChannel(str(url), secret, name=settings.name or "webhook")
    password = _secret(env, settings.password_env, "email password")
    if password:
        register_secret(password)
    return EmailChannel(
        str(settings.host),
        settings.port,
        str(settings.sender),
        settings.recipients,
        username=settings.username,
        password=password,
        starttls=settings.starttls,
        name=settings.name or "email",
    )


def register_channel_secrets(settings: NotificationSettings, env: Mapping[str, str]) -> None:
    """Register every configured channel's secrets (webhook URLs' secret parts, webhook
    signing secrets, SMTP passwords) for redaction, before any channel is built: a log line
    that quotes one (a job's log, an error from a library) never shows it. Channels whose
    variables are unset are passed over (building them reports that)."""
    for channel in settings.channels:
        url = channel.webhook_url or channel.url
        for name in (channel.webhook_url_env, channel.url_env):
            if name and env.get(name):
                url = env[name]
        if url:
            register_url_secrets(str(url))
        for name in (channel.secret_env, channel.password_env):
            if name and env.get(name):
                register_secret(env[name])


def build_notifier(settings: NotificationSettings, env: Mapping[str, str]) -> Notifier | None:
    if not settings.channels:
        return None
    return Notifier([build_channel(c, env) for c in settings.channels])


def backup_failed_event(target: str, tags: tuple[str, ...], error: StrongroomError) -> Event:
    return Event(
        "backup_failed",
        target,
        f"backup of {target} failed: {error.message}",
        {"error": error.message, "tags": ", ".join(tags)},
    )


def backup_events(
    settings: NotificationSettings,
    repo: Repository,
    target: str,
    tags: tuple[str, ...],
    run: BackupRun,
) -> list[Event]:
    """What one backup run notifies, per the configuration: its failure (``on_failure``),
    a failed ``post_backup`` hook (``hook_failed``, also under ``on_failure``), success
    (``on_success``) and a size change past ``size_change_percent``."""
    if run.report is None:
        assert run.error is not None
        return [backup_failed_event(target, tags, run.error)] if settings.on_failure else []
    events = []
    m = run.report.manifest
    if isinstance(run.error, HookFailedAfter) and settings.on_failure:
        events.append(
            Event(
                "hook_failed",
                target,
                run.error.message,
                {"backup_id": m.backup_id, "hook": "post_backup"},
            )
        )
    if settings.on_success:
        events.append(
            Event(
                "backup_succeeded",
                m.target,
                f"backup {m.backup_id} of {m.target} complete",
                {
                    "backup_id": m.backup_id,
                    "raw_size": m.raw_size,
                    "stored_new_bytes": m.stored_new_bytes,
                },
            )
        )
    size_event = _size_change(settings, repo, run.report)
    if size_event is not None:
        events.append(size_event)
    return events


def _size_change(
    settings: NotificationSettings, repo: Repository, report: BackupReport
) -> Event | None:
    if settings.size_change_percent is None:
        return None
    m = report.manifest
    try:
        previous = _previous(repo.list_backups(m.target), m)
    except StrongroomError as exc:  # the backup is done; say why this check was skipped
        log.error("size check of backup %s skipped: %s", m.backup_id, exc.message)
        return None
    if previous is None or previous.raw_size <= 0:
        return None
    change = 100.0 * (m.raw_size - previous.raw_size) / previous.raw_size
    if abs(change) < settings.size_change_percent:
        return None
    return Event(
        "size_changed",
        m.target,
        f"backup of {m.target} changed size by {change:+.1f}%",
        {
            "backup_id": m.backup_id,
            "raw_size": m.raw_size,
            "previous_raw_size": previous.raw_size,
            "change_percent": round(change, 1),
        },
    )


def _previous(backups: list[Manifest], current: Manifest) -> Manifest | None:
    earlier = [
        m
        for m in backups
        if m.backup_id != current.backup_id
        and is_regular(m.tags)
        and parse_iso(m.finished_at) <= parse_iso(current.finished_at)
    ]
    return earlier[-1] if earlier else None


def notify_backup(
    notifier: Notifier | None,
    settings: NotificationSettings,
    repo: Repository,
    target: str,
    tags: tuple[str, ...],
    run: BackupRun,
) -> None:
    """Send what :func:`backup_events` says to every channel; never raises (a failing
    channel is logged by the notifier)."""
    if notifier is None:
        return
    for event in backup_events(settings, repo, target, tags, run):
        notifier.notify(event)
