"""Slack incoming webhooks (https://api.slack.com/messaging/webhooks).

The webhook URL is itself the credential, so messages and logs show only its scheme and
host (``https://hooks.slack.com/…``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from strongroom.notify._http import post
from strongroom.notify.base import USER_AGENT, check_http_url, describe_endpoint, url_secrets
from strongroom.notify.events import Event

if TYPE_CHECKING:  # httpx loads when a message is sent (~0.15 s of CPU per CLI start)
    import httpx

# Slack block limits: header text 150 chars, 10 fields per section, 2000 chars per field.
_HEADER_MAX = 150
_FIELDS_PER_SECTION = 10
_FIELD_MAX = 2000


def _escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(f"*{_escape(label)}*\n{_escape(value)}", _FIELD_MAX)}


def slack_payload(event: Event) -> dict[str, object]:
    """The incoming-webhook JSON: fallback ``text`` plus header, summary and field blocks."""
    title = event.title()
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, _HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(event.summary) or " "}},
        {
            "type": "section",
            "fields": [
                _field("Target", event.target),
                _field("Host", event.host),
                _field("Time", event.occurred_at),
                _field("Event", event.kind),
            ],
        },
    ]
    details = [_field(label, text) for label, text in event.detail_lines()]
    for start in range(0, len(details), _FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": details[start : start + _FIELDS_PER_SECTION]})
    return {"text": _escape(f"{title}: {event.summary}"), "blocks": blocks}


class SlackChannel:
    """Posts events to a Slack incoming webhook."""

    def __init__(
        self,
        webhook_url: str,
        *,
        name: str = "slack",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        check_http_url(webhook_url, "Slack webhook URL")
        self.name = name
        self.timeout = timeout
        self._url = webhook_url
        self._client = client
        self.endpoint = describe_endpoint(webhook_url)

    def __repr__(self) -> str:
        return f"SlackChannel(name={self.name!r}, endpoint={self.endpoint!r})"

    def send(self, event: Event) -> None:
        """Post ``event``; raise ``NotificationError`` unless Slack answers 2xx."""
        body = json.dumps(slack_payload(event), separators=(",", ":")).encode()
        post(
            self._client,
            self._url,
            body,
            {"Content-Type": "application/json", "User-Agent": USER_AGENT},
            timeout=self.timeout,
            label=f"{self.name} {self.endpoint}",
            secrets=url_secrets(self._url),
        )
