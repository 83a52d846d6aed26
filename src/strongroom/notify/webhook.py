"""Generic JSON webhook, optionally signed with HMAC-SHA256.

Each event is sent as one ``POST`` whose body is the event's JSON (UTF-8, keys sorted,
no whitespace, non-ASCII escaped), with these headers:

- ``Content-Type: application/json``
- ``X-Strongroom-Event: <kind>`` (``backup_failed``, ``size_changed``, ...)
- ``X-Strongroom-Timestamp: <unix seconds>`` (when this attempt was made)
- ``X-Strongroom-Delivery: <hex>`` (same for every retry of one event: use it to de-duplicate)
- ``X-Strongroom-Signature: sha256=<hex>`` (only when a secret is configured)

The signature is ``hex(HMAC-SHA256(key=secret, msg=f"{timestamp}.{body}"))`` computed over
the UTF-8 bytes of the timestamp header, a dot and the raw request body exactly as
received. A receiver must recompute it from the raw body (not re-serialised JSON), compare
in constant time, and reject timestamps too far from its own clock to stop replays.
:func:`verify_signature` does all three; in another language::

    expected = "sha256=" + hmac_sha256_hex(secret, timestamp + "." + raw_body)
    ok = constant_time_equal(expected, signature) and abs(now - int(timestamp)) <= 300
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from strongroom.notify._http import post
from strongroom.notify.base import USER_AGENT, check_http_url, describe_endpoint, url_secrets
from strongroom.notify.events import Event

if TYPE_CHECKING:  # httpx loads when a message is sent (~0.15 s of CPU per CLI start)
    import httpx

SIGNATURE_PREFIX = "sha256="
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "x-strongroom-event",
        "x-strongroom-timestamp",
        "x-strongroom-delivery",
        "x-strongroom-signature",
    }
)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: str | int, body: str | bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of f"{timestamp}.{body}">``."""
    message = str(timestamp).encode() + b"." + _as_bytes(body)
    digest = hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: str | bytes,
    signature: str,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is valid for ``body`` and ``timestamp`` is within tolerance."""
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def event_body(event: Event) -> bytes:
    """The canonical request body: sorted keys, compact separators, ASCII only."""
    return json.dumps(event.to_json_dict(), sort_keys=True, separators=(",", ":")).encode()


class WebhookChannel:
    """POSTs events as JSON to ``url``, signed when ``secret`` is set."""

    def __init__(
        self,
        url: str,
        secret: str | None,
        *,
        name: str = "webhook",
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        check_http_url(url, "webhook URL")
        extra = dict(headers or {})
        clash = sorted(h for h in extra if h.lower() in RESERVED_HEADERS)
        if clash:
            raise ValueError(f"webhook headers may not set {', '.join(clash)}")
        self.name = name
        self.timeout = timeout
        self.endpoint = describe_endpoint(url)
        self._url = url
        self._secret = secret or None
        self._headers = extra
        self._client = client

    def __repr__(self) -> str:
        signed = "signed" if self._secret else "unsigned"
        return f"WebhookChannel(name={self.name!r}, endpoint={self.endpoint!r}, {signed})"

    def send(self, event: Event) -> None:
        """POST ``event``; raise ``NotificationError`` unless the receiver answers 2xx."""
        body = event_body(event)
        timestamp = str(int(time.time()))
        headers = {"User-Agent": USER_AGENT, **self._headers}
        headers.update(
            {
                "Content-Type": "application/json",
                "X-Strongroom-Event": event.kind,
                "X-Strongroom-Timestamp": timestamp,
                "X-Strongroom-Delivery": hashlib.sha256(body).hexdigest()[:32],
            }
        )
        if self._secret:
            headers["X-Strongroom-Signature"] = sign(self._secret, timestamp, body)
        secrets = list(url_secrets(self._url))
        for value in self._headers.values():  # e.g. "Bearer <token>": hide value and token
            secrets += [p for p in (value, *value.split()) if len(p) >= 8]
        if self._secret:
            secrets.append(self._secret)
        post(
            self._client,
            self._url,
            body,
            headers,
            timeout=self.timeout,
            label=f"{self.name} {self.endpoint}",
            secrets=secrets,
        )
