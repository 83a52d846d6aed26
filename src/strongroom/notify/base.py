"""What every notification channel provides, and helpers to keep endpoints out of messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from strongroom import __version__
from strongroom.errors import StrongroomError
from strongroom.notify.events import Event
from strongroom.redaction import redact_text, register_secret

USER_AGENT = f"strongroom/{__version__}"

# HTTP statuses worth another attempt; every other non-2xx answer is final.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class NotificationError(StrongroomError):
    """A channel could not deliver an event. The message holds no secrets.

    ``transient`` is False when repeating the same request cannot help (bad credentials,
    an unknown webhook, a rejected recipient); the dispatcher then stops retrying.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class Channel(Protocol):
    """A destination for events. ``send`` raises :class:`NotificationError` on failure."""

    @property
    def name(self) -> str: ...

    def send(self, event: Event) -> None: ...


def describe_endpoint(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/secret`` -> ``https://hooks.slack.com/…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{f':{port}' if port else ''}/…"


def check_http_url(url: str, what: str) -> None:
    """Raise ``ValueError`` (with the URL redacted) unless ``url`` is an http(s) URL."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {describe_endpoint(url)}")


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that may be secret (whole URL, path and its long segments,
    query and its long values, fragment, password)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    pieces = [url, parts.path, parts.query, parts.path.rstrip("/"), parts.password or ""]
    pieces.extend(p for p in parts.path.split("/") if len(p) >= 8)
    # ?token=…: a receiver that echoes the value alone must not show it either
    pieces.extend(value for _, value in parse_qsl(parts.query) if len(value) >= 8)
    pieces.append(parts.fragment)
    return tuple(p for p in pieces if len(p) > 1)


def register_url_secrets(url: str) -> None:
    """Redact ``url``'s secret parts from every text from now on (logs, job logs, errors),
    not only from the channel's own messages: the whole URL, its path and query, its
    password, and path segments or query values of 12 characters or more (a Slack or
    Discord webhook's token; shorter segments such as ``services`` are words that the
    redaction would otherwise cut out of unrelated text)."""
    register_secret(*(p for p in url_secrets(url) if len(p) >= 12 or p in (url,)))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Redact ``secrets`` (longest first) and URL passwords; squash to one short line."""
    ordered = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    text = redact_text(" ".join(text.split()), ordered)
    return text if len(text) <= 300 else text[:299] + "…"
