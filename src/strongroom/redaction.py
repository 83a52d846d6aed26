"""Remove secrets from text before it reaches a log, an error or a screen."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)
_KV_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=([^\s&]+)")

REDACTED = "***"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user and host stay visible)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return redact_text(url)
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    redacted = urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))
    return redact_text(redacted)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Redact URL passwords, ``password=`` pairs and any literal ``secrets`` in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m[1]}={REDACTED}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
