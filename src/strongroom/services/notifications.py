"""Notification channels built from the configuration (secrets read from the environment)."""

from __future__ import annotations

from collections.abc import Mapping

from strongroom.config import ChannelSettings, NotificationSettings
from strongroom.errors import UsageError
from strongroom.notify.base import Channel
from strongroom.notify.dispatch import Notifier
from strongroom.notify.email import EmailChannel
from strongroom.notify.slack import SlackChannel
from strongroom.notify.webhook import WebhookChannel


def _secret(env: Mapping[str, str], name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise UsageError(f"environment variable {name} ({what}) is not set")
    return value


def build_channel(settings: ChannelSettings, env: Mapping[str, str]) -> Channel:
    if settings.type == "slack":
        url = settings.webhook_url or _secret(env, settings.webhook_url_env, "slack webhook_url")
        return SlackChannel(str(url), name=settings.name or "slack")
    if settings.type == "webhook":
        secret = _secret(env, settings.secret_env, "webhook secret")
        return WebhookChannel(str(settings.url), secret, name=settings.name or "webhook")
    return EmailChannel(
        str(settings.host),
        settings.port,
        str(settings.sender),
        settings.recipients,
        username=settings.username,
        password=_secret(env, settings.password_env, "email password"),
        starttls=settings.starttls,
        name=settings.name or "email",
    )


def build_notifier(settings: NotificationSettings, env: Mapping[str, str]) -> Notifier | None:
    if not settings.channels:
        return None
    return Notifier([build_channel(c, env) for c in settings.channels])
