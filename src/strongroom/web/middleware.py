"""ASGI middleware of the app: a limit on request bodies and the security headers of every
response (forwarded headers are read by uvicorn's ``ProxyHeadersMiddleware``, given the
configured ``web.trusted_proxies`` only: ``web/app.py``).

Pure ASGI (not ``BaseHTTPMiddleware``), so a streamed download that fails half-way is
never turned into a response that looks complete (``web/actions/downloads.py``)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 64 * 1024  # bytes: the largest request the API or a form needs is a few KiB
# How `strongroom serve` runs uvicorn: uvicorn's own proxy handling is off (by default it
# believes X-Forwarded-For from 127.0.0.1, so anyone on the host could pick their address);
# the app reads forwarded headers from the configured `web.trusted_proxies` only.
SERVER_OPTIONS: Mapping[str, Any] = {"proxy_headers": False}


class SecurityHeaders:
    """``X-Content-Type-Options``, ``X-Frame-Options``, ``Referrer-Policy`` and a strict
    Content-Security-Policy (not for the API docs page, which loads its own assets)."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope.get("path", "")).startswith("/api/docs")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if docs and "content-security-policy" in headers:
                    del headers["content-security-policy"]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Requests whose body is larger than ``limit`` bytes are answered 413 before the app
    sees them: by their ``Content-Length``, or (chunked) once that many bytes arrived. The
    body is read here (it is small) and handed to the app as it came."""

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

        async def replay() -> Message:
            return received.popleft() if received else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"the request body is larger than {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
