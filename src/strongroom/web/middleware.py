"""ASGI middleware of the app: a limit on request bodies and the security headers of every
response (forwarded headers are read by uvicorn's ``ProxyHeadersMiddleware``, given the
configured ``web.trusted_proxies`` only: ``web/app.py``).

Pure ASGI (not ``BaseHTTPMiddleware``), so a streamed download that fails half-way is
never turned into a response that looks complete (``web/actions/downloads.py``)."""

from __future__ import annotations

import ipaddress
import json
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

MAX_BODY = 64 * 1024  # bytes: the largest request the API or a form needs is a few KiB
# How `strongroom serve` runs uvicorn: uvicorn's own proxy handling is off (by default it
# believes X-Forwarded-For from 127.0.0.1, so anyone on the host could pick their address);
# the app reads forwarded headers from the configured `web.trusted_proxies` only.
SERVER_OPTIONS: Mapping[str, Any] = {"proxy_headers": False}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ForwardedClient:
    """uvicorn's ``ProxyHeadersMiddleware`` for the listed proxies (``web.trusted_proxies``),
    keeping only what is an IP address: a listed proxy that passes on ``X-Forwarded-For:
    garbage`` (or a NUL, or 300 characters) leaves the client as the proxy's address,
    rather than put that text in the audit log and the login limiter's keys."""

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        # uvicorn types ASGI apps its own way; the two describe the same interface
        proxy = ProxyHeadersMiddleware(cast(Any, self._checked), trusted_hosts=trusted)
        self.proxy = cast(ASGIApp, proxy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self.proxy({**scope, "strongroom.peer": scope.get("client")}, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if client is not None and not _is_address(str(client[0])):
            scope["client"] = scope["strongroom.peer"]
        await self.app(scope, receive, send)


class SecurityHeaders:
    """``X-Content-Type-Options``, ``X-Frame-Options``, ``Referrer-Policy`` and a strict
    Content-Security-Policy (not for the API docs page, which loads its own assets); over
    https (directly, or as a listed proxy says with ``X-Forwarded-Proto``) every cookie is
    marked ``Secure`` even without ``--secure-cookies``."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope.get("path", "")).startswith("/api/docs")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if docs and "content-security-policy" in headers:
                    del headers["content-security-policy"]
                if https:
                    _secure_cookies(message)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure_cookies(message: Message) -> None:
    headers: list[tuple[bytes, bytes]] = []
    for name, value in message.get("headers", []):
        if name.lower() == b"set-cookie" and b"secure" not in value.lower().split(b"; "):
            value += b"; secure"
        headers.append((name, value))
    message["headers"] = headers


def _has_nul(data: bytes, content_type: str = "application/x-www-form-urlencoded") -> bool:
    """A NUL as the data's format writes it: raw, ``%00`` (a query, a form), ``\\u0000``
    (JSON); a JSON text may hold ``%00`` as it is."""
    if not data:
        return False
    if b"\x00" in data:
        return True
    lowered = data.lower()
    if content_type.startswith("application/x-www-form-urlencoded"):
        return b"%00" in lowered
    return "json" in content_type and b"\\u0000" in lowered


class BodyLimit:
    """Requests whose body is larger than ``limit`` bytes are answered 413 before the app
    sees them: by their ``Content-Length``, or (chunked) once that many bytes arrived. The
    body is read here (it is small) and handed to the app as it came.

    A NUL character in the path, the query or the body (raw, ``%00`` or ``\\u0000``) is
    a 400 here too: no name, id, URL or password of strongroom holds one, and PostgreSQL
    (as the service database) refuses it in text, which would otherwise be a 500 wherever
    a value reaches a query (a job id, a filter, the audit log)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        if "\x00" in str(scope.get("path", "")) or _has_nul(scope.get("query_string", b"")):
            await self._refuse(send, 400, "a NUL character is not allowed in a request")
            return
        received: deque[Message] = deque()
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break  # the client went away; the app will see it
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        kind = Headers(scope=scope).get("content-type", "").lower()
        if _has_nul(b"".join(m.get("body", b"") for m in received), kind):
            await self._refuse(send, 400, "a NUL character is not allowed in a request")
            return

        async def replay() -> Message:
            return received.popleft() if received else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await self._refuse(send, 413, f"the request body is larger than {self.limit} bytes")

    async def _refuse(self, send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
