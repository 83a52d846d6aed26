"""The configured notification channels, and "Send a test notification" to one of them
(admin, CSRF, audited as ``notify-test``).

A channel's secrets (a Slack or webhook URL, a webhook's signing secret, an SMTP password)
never reach a page, the audit log or the server's log: a channel is described by its
type, name and host only, and a delivery error has every secret of its channel removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import escape

from strongroom.config import ChannelSettings
from strongroom.errors import StrongroomError
from strongroom.notify.base import describe_endpoint, scrub, url_secrets
from strongroom.notify.dispatch import Notifier
from strongroom.notify.events import Event
from strongroom.services.notifications import build_channel
from strongroom.web import audit
from strongroom.web.auth import Principal, require_admin
from strongroom.web.context import WebContext, client_of, context_of
from strongroom.web.ui.render import render_error

router = APIRouter()
Admin = Annotated[Principal, Depends(require_admin("notify-test"))]


@dataclass(frozen=True)
class ChannelRow:
    """What the page shows of one channel: ``index`` in the configuration, ``label``
    (its name, or its type), ``kind`` (slack, webhook, email) and ``destination`` (host
    only, e.g. ``https://hooks.slack.com/…``; or which variable is not set)."""

    index: int
    label: str
    kind: str
    destination: str


def _label(settings: ChannelSettings) -> str:
    return settings.name or settings.type


def _url(settings: ChannelSettings, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(the channel's URL if known, the variable it comes from) of a Slack or webhook."""
    if settings.type == "slack":
        return settings.webhook_url or env.get(settings.webhook_url_env or ""), (
            settings.webhook_url_env
        )
    return settings.url or env.get(settings.url_env or ""), settings.url_env


def _destination(settings: ChannelSettings, env: Mapping[str, str]) -> str:
    if settings.type == "email":
        count = len(settings.recipients)
        return f"{settings.host}:{settings.port}, {count} recipient{'s' if count != 1 else ''}"
    url, variable = _url(settings, env)
    if url:
        return describe_endpoint(url)
    return f"${variable} is not set"


def channel_rows(ctx: WebContext) -> list[ChannelRow]:
    """The configured channels, in configuration order."""
    return [
        ChannelRow(i, _label(c), c.type, _destination(c, ctx.env))
        for i, c in enumerate(ctx.settings.notifications.channels)
    ]


def _secrets(settings: ChannelSettings, env: Mapping[str, str]) -> list[str]:
    """Every value of this channel that must not be shown."""
    found: list[str] = []
    if settings.type in ("slack", "webhook"):
        url, _ = _url(settings, env)
        if url:
            found += url_secrets(url)
    for variable in (settings.secret_env, settings.password_env):
        value = env.get(variable or "")
        if value:
            found.append(value)
    return found


def send_test(ctx: WebContext, settings: ChannelSettings, sender: str) -> str | None:
    """Send one test event to one channel, once (no retries); ``None`` when it was
    delivered, else why not (one line, the channel's secrets removed)."""
    try:
        channel = build_channel(settings, ctx.env)
    except StrongroomError as exc:
        error: str | None = exc.message
    else:
        event = Event(
            "test",
            _label(settings),
            f"test notification sent by {sender} from the strongroom web UI",
            {"sent_by": sender},
        )
        [result] = Notifier([channel], attempts=1).notify(event)
        error = None if result.ok else (result.error or "not delivered")
    if error is None:
        return None
    return scrub(error, _secrets(settings, ctx.env))


@router.post("/ui/notifications/{index}/test")
def notification_test(
    request: Request, principal: Admin, index: Annotated[int, Path(ge=0, le=999)]
) -> Response:
    """Send a test notification to channel ``index``; answers a fragment saying whether
    it was delivered (``data-ok="yes"``) or the error."""
    ctx = context_of(request)
    channels = ctx.settings.notifications.channels
    if index >= len(channels):
        return render_error(request, 404, f"no notification channel {index}")
    settings = channels[index]
    error = send_test(ctx, settings, principal.name)
    audit.record(
        ctx.db,
        principal.name,
        "notify-test",
        "ok: delivered" if error is None else f"failed: {error}",
        subject=f"{settings.type} channel {_label(settings)}",
        client=client_of(request),
    )
    if error is None:
        html = '<span class="notify-result ok" data-ok="yes" role="status">Delivered.</span>'
    else:
        html = (
            '<span class="notify-result bad" data-ok="no" role="alert">'
            f"Not delivered: {escape(error)}</span>"
        )
    return HTMLResponse(html)
