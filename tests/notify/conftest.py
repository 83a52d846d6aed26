"""Real local servers for the notification tests: an HTTP receiver and aiosmtpd."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from strongroom.notify.events import Event

SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "s3cret-Pa55word-xyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def event() -> Event:
    return Event(
        kind="backup_failed",
        target="shop",
        summary="pg_dump exited with status 1",
        details={
            "backup_id": "20261121T140000Z-3f9a2c1b",
            "error": "connection to postgres://app:hunter2@db:5432/shop failed",
            "raw_size": 1536,
            "change_percent": -12.5,
            "age_hours": None,
        },
        occurred_at="2026-11-21T14:00:00Z",
        host="db1",
    )


# --- HTTP receiver -----------------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request; answers ``fail_status`` to the first ``fail_first`` of them."""

    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 500
    fail_body: bytes = b"boom"
    ok_body: bytes = b"ok"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, rec: Recorded) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(rec)
            if len(self.requests) <= self.fail_first:
                return self.fail_status, self.fail_body
        return 200, self.ok_body


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status, answer = state.answer(rec)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- SMTP servers -------------------------------------------------------------------------
@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    authenticated: bool
    login: bytes | None


class RecordingHandler:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                bool(session.authenticated),
                session.auth_data if session.authenticated else None,
            )
        )
        return "250 Message accepted for delivery"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == SMTP_USER.encode()
        and data.password == SMTP_PASSWORD.encode()
    )
    if not ok:  # handled=False: let aiosmtpd answer 535 itself
        return AuthResult(success=False, handled=False)
    return AuthResult(success=True, auth_data=data.login)


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler
    client_context: ssl.SSLContext | None = None


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 / localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strongroom test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _start(handler: RecordingHandler, **kwargs: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def smtp_plain() -> Iterator[SmtpServer]:
    handler = RecordingHandler()
    controller, port = _start(handler)
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


@pytest.fixture
def smtp_starttls(tls_files: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """STARTTLS required, AUTH required (and only offered after TLS)."""
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    handler = RecordingHandler()
    controller, port = _start(
        handler,
        tls_context=server_ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    try:
        yield SmtpServer("127.0.0.1", port, handler, ssl.create_default_context(cafile=cert))
    finally:
        controller.stop()


@pytest.fixture
def smtp_implicit_tls(tls_files: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """SMTPS (TLS from the first byte), AUTH required."""
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    handler = RecordingHandler()
    controller, port = _start(
        handler,
        ssl_context=server_ctx,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,  # the whole connection is TLS; aiosmtpd only counts STARTTLS
    )
    try:
        yield SmtpServer("127.0.0.1", port, handler, ssl.create_default_context(cafile=cert))
    finally:
        controller.stop()
