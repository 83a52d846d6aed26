"""A fault-injecting HTTP proxy in front of an S3 endpoint (for tests and the fault campaign).

``FaultProxy(upstream)`` listens on a free port of 127.0.0.1 and forwards every request to
``upstream`` (e.g. moto's server), unchanged. ``set_fault`` makes matching requests fail
in one of these ways instead:

* ``error500`` / ``error503``: an S3 error document (``InternalError`` /
  ``ServiceUnavailable``); the request never reaches the upstream.
* ``throttle``: ``503 SlowDown``, as S3 throttles.
* ``reset``: the request is read, then the connection is reset without an answer.
* ``truncate``: the upstream's answer with its full ``Content-Length``, but only half of
  the body; then the connection is closed.
* ``corrupt``: the upstream's answer with a few bytes of the body flipped; length and
  headers (checksums included) unchanged.
* ``drop``: the request is forwarded (it takes effect upstream), then the connection is
  reset without an answer: the client cannot tell whether its write landed.
* ``corrupt_upload``: a few bytes of the request's body are flipped before it is
  forwarded (headers, checksums included, unchanged): does the server notice?
* ``blackhole``: the request is read and never answered (until ``stop``).
* ``slow``: the request is forwarded ``delay`` seconds late, even if the client has given
  up meanwhile (as a server that had the whole request may still carry it out).
* ``old_store``: a store that implements neither flexible checksums nor ``aws-chunked``
  uploads (R2 until 2025, older MinIO and Ceph gateways): a request carrying an
  ``x-amz-checksum-*`` header, ``Content-Encoding: aws-chunked`` or
  ``x-amz-content-sha256: STREAMING-…`` is answered ``501 NotImplemented`` with an error
  document naming the header; every other request passes through (and is not counted
  as a fault).
* permanent answers, the request never reaching the upstream: ``denied`` (403
  ``AccessDenied``), ``bad_key`` (403 ``InvalidAccessKeyId``), ``bad_signature`` (403
  ``SignatureDoesNotMatch``), ``no_bucket`` (404 ``NoSuchBucket``), ``bad_request`` (400
  ``InvalidRequest``), ``not_implemented`` (501 ``NotImplemented``), ``wrong_region``
  (301 ``PermanentRedirect``, the bucket said to be in ``eu-west-3``).

Only the standard library is used. ``stop`` returns promptly even while connections are
black-holed: it wakes every waiting handler and shuts down every open client socket.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

log = logging.getLogger("strongroom_servers.s3proxy")

KINDS = frozenset(
    {
        "error500",
        "error503",
        "throttle",
        "reset",
        "truncate",
        "corrupt",
        "drop",
        "corrupt_upload",
        "blackhole",
        "slow",
        "old_store",
        "denied",
        "bad_key",
        "bad_signature",
        "no_bucket",
        "bad_request",
        "not_implemented",
        "wrong_region",
    }
)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_ERRORS = {
    "error500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "error503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "denied": (403, "AccessDenied", "Access Denied"),
    "bad_key": (
        403,
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    "bad_signature": (
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "no_bucket": (404, "NoSuchBucket", "The specified bucket does not exist"),
    "bad_request": (400, "InvalidRequest", "The request is not valid for this store."),
    "not_implemented": (
        501,
        "NotImplemented",
        "A header you provided implies functionality that is not implemented",
    ),
    "wrong_region": (
        301,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified "
        "endpoint. Please send all future requests to this endpoint.",
    ),
}
WRONG_REGION = "eu-west-3"  # where ``wrong_region`` says the bucket is
UPSTREAM_TIMEOUT = 60.0  # seconds the proxy waits for the upstream
CLIENT_TIMEOUT = 60.0  # seconds an idle client connection is kept


class _Fault:
    """What to inject, and into which requests (guarded by the proxy's mutex)."""

    def __init__(
        self,
        kind: str,
        rate: float,
        count: int | None,
        methods: frozenset[str] | None,
        key_contains: str | None,
        delay: float,
    ) -> None:
        self.kind = kind
        self.rate = rate
        self.remaining = count
        self.methods = methods
        self.key_contains = key_contains
        self.delay = delay

    def matches(self, method: str, path: str, unsupported: tuple[str, str] | None) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.kind == "old_store" and unsupported is None:
            return False
        return self.key_contains is None or self.key_contains in path


def unsupported_header(headers: Any) -> tuple[str, str] | None:
    """The first header (name, value) an old store does not implement, if any: an
    ``x-amz-checksum-*`` header, ``Content-Encoding: aws-chunked`` or a streaming
    ``x-amz-content-sha256``."""
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-checksum-"):
            return lowered, value
        if lowered == "content-encoding" and "aws-chunked" in value.lower():
            return lowered, value
        if lowered == "x-amz-content-sha256" and value.upper().startswith("STREAMING-"):
            return lowered, value
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (its timeout, a reset) is normal here: log quietly."""
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # every method S3 clients use goes through one path
    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # --- request ------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        unsupported = unsupported_header(self.headers)
        fault = proxy._pick(self.command, self.path, unsupported)
        if fault is None:
            self._forward(body, None)
            return
        kind = fault.kind
        log.info("injecting %s into %s %s", kind, self.command, self.path)
        if kind == "old_store" and unsupported is not None:
            name, value = unsupported
            self._send_error_document(
                501, "NotImplemented", f"Header '{name}' with value '{value}' not implemented"
            )
        elif kind in _ERRORS:
            self._send_error_document(*_ERRORS[kind])
        elif kind == "reset":
            self._reset()
        elif kind == "drop":
            self._forward(body, "drop")
        elif kind == "corrupt_upload":
            self._forward(_flip(body, ends=False) if body else body, None)
        elif kind == "blackhole":
            proxy._stopping.wait()
            self.close_connection = True
        elif kind == "slow":
            if not proxy._stopping.wait(fault.delay):
                self._forward(body, None)
            else:
                self.close_connection = True
        else:  # truncate, corrupt: the upstream answers, the proxy spoils the answer
            self._forward(body, kind)

    # --- answers ------------------------------------------------------------------
    def _send_error_document(self, status: int, code: str, message: str) -> None:
        extra = ""
        if code == "PermanentRedirect":
            bucket = self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
            extra = (
                f"<Bucket>{escape(bucket)}</Bucket>"
                f"<Endpoint>{escape(bucket)}.s3.{WRONG_REGION}.amazonaws.com</Endpoint>"
            )
        document = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{extra}"
            f"<Resource>{escape(self.path)}</Resource><RequestId>faultproxy</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(document)))
        if code == "SlowDown":
            self.send_header("Retry-After", "1")
        if code == "PermanentRedirect":
            self.send_header("x-amz-bucket-region", WRONG_REGION)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(document)

    def _reset(self) -> None:
        """Close with a TCP reset (linger 0), no answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _forward(self, body: bytes, spoil: str | None) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(
            proxy._upstream_host, proxy._upstream_port, timeout=UPSTREAM_TIMEOUT
        )
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                lowered = name.lower()
                if lowered in _HOP_BY_HOP or lowered == "content-length":
                    continue
                upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            answer = response.read()
            status, reason, headers = response.status, response.reason, response.getheaders()
        except (OSError, http.client.HTTPException) as exc:
            log.warning("upstream failed for %s %s: %s", self.command, self.path, exc)
            self._send_error_document(502, "BadGateway", "the proxy's upstream failed")
            return
        finally:
            upstream.close()
        if spoil == "drop":
            self._reset()
            return
        head = self.command == "HEAD"
        if spoil == "corrupt" and answer:
            answer = _flip(answer)
        self.send_response(status, reason)
        length = str(len(answer))
        for name, value in headers:
            lowered = name.lower()
            if lowered in _HOP_BY_HOP:
                continue
            if lowered == "content-length":
                if head:
                    length = value
                continue
            self.send_header(name, value)
        self.send_header("Content-Length", length)
        if spoil == "truncate":
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        if spoil == "truncate":
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(answer)


def _flip(data: bytes, *, ends: bool = True) -> bytes:
    """Invert a few bytes spread over ``data`` (same length); with ``ends=False`` not the
    first and last (an aws-chunked upload keeps its framing, only its data is spoiled)."""
    spoiled = bytearray(data)
    middle = {len(data) // 3, len(data) // 2, (2 * len(data)) // 3}
    for position in middle | {0, len(data) - 1} if ends else middle:
        spoiled[position] ^= 0xFF
    return bytes(spoiled)


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 that forwards to ``upstream`` and injects faults."""

    def __init__(self, upstream: str, *, seed: int | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://HOST:PORT URL, got {upstream!r}")
        self.upstream = upstream
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._rng = random.Random(seed)  # noqa: S311 (fault choice, not cryptography)
        self._mutex = threading.Lock()
        self._fault: _Fault | None = None
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0  # requests seen
        self.faults = 0  # faults injected

    # --- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="s3-fault-proxy",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; wake black-holed handlers and close every client connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._mutex:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- faults ---------------------------------------------------------------------
    def set_fault(
        self,
        kind: str | None,
        *,
        rate: float = 1.0,
        count: int | None = None,
        methods: frozenset[str] | None = None,
        key_contains: str | None = None,
        delay: float = 2.0,
        seed: int | None = None,
    ) -> None:
        """Inject ``kind`` into matching requests (``None``: pass everything through).

        ``rate`` is the probability per matching request, ``count`` the most faults to
        inject (then requests pass through), ``methods`` the HTTP methods that match
        (all when None), ``key_contains`` a substring of the request path, ``delay`` the
        seconds a ``slow`` answer is late, ``seed`` reseeds the proxy's random choice."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        with self._mutex:
            if seed is not None:
                self._rng.seed(seed)
            self._fault = (
                None
                if kind is None
                else _Fault(
                    kind,
                    rate,
                    count,
                    frozenset(m.upper() for m in methods) if methods is not None else None,
                    key_contains,
                    delay,
                )
            )

    def _pick(
        self, method: str, path: str, unsupported: tuple[str, str] | None = None
    ) -> _Fault | None:
        with self._mutex:
            self.requests += 1
            fault = self._fault
            if fault is None or not fault.matches(method, path, unsupported):
                return None
            if fault.remaining is not None and fault.remaining <= 0:
                return None
            if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
            self.faults += 1
            return fault

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._mutex:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)
