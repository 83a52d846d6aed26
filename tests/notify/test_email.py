from __future__ import annotations

import logging
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from strongroom.notify.base import NotificationError
from strongroom.notify.dispatch import Notifier
from strongroom.notify.email import EmailChannel
from strongroom.notify.events import Event
from tests.notify.conftest import SMTP_PASSWORD, SMTP_USER, SmtpServer, free_port

SENDER = "strongroom@example.com"
TO = ["ops@example.com", "dba@example.com"]


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_plain_delivery(smtp_plain: SmtpServer, event: Event) -> None:
    channel = EmailChannel(smtp_plain.host, smtp_plain.port, SENDER, TO, starttls=False)
    channel.send(event)

    [got] = smtp_plain.handler.messages
    assert got.mail_from == SENDER
    assert got.rcpt_tos == TO
    assert not got.tls and not got.authenticated
    msg = parse(got.content)
    assert msg["Subject"] == "strongroom: backup of shop FAILED"
    assert msg["From"] == SENDER
    assert msg["To"] == ", ".join(TO)
    assert msg["X-Strongroom-Event"] == "backup_failed"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@example.com>")
    body = msg.get_content().replace("\r\n", "\n")
    assert body.startswith("pg_dump exited with status 1\n")
    assert "Target: shop" in body and "Host:   db1" in body
    assert "backup id:" in body and "20261121T140000Z-3f9a2c1b" in body
    assert "1536 bytes (1.5 KiB)" in body
    assert "hunter2" not in body


def test_starttls_required_but_not_offered(smtp_plain: SmtpServer, event: Event) -> None:
    channel = EmailChannel(smtp_plain.host, smtp_plain.port, SENDER, TO)  # starttls=True
    with pytest.raises(NotificationError, match="does not offer STARTTLS") as info:
        channel.send(event)
    assert info.value.transient is False
    assert smtp_plain.handler.messages == []


def test_refused_recipients(smtp_plain: SmtpServer, event: Event) -> None:
    smtp_plain.handler.refuse = {"dba@example.com"}
    channel = EmailChannel(smtp_plain.host, smtp_plain.port, SENDER, TO, starttls=False)
    with pytest.raises(NotificationError, match="delivered to 1 of 2") as info:
        channel.send(event)
    assert info.value.transient is False  # a retry would mail ops@ twice
    assert [m.rcpt_tos for m in smtp_plain.handler.messages] == [["ops@example.com"]]

    smtp_plain.handler.refuse = set(TO)
    with pytest.raises(NotificationError, match="all recipients refused"):
        channel.send(event)


def test_starttls_and_auth(smtp_starttls: SmtpServer, event: Event) -> None:
    channel = EmailChannel(
        smtp_starttls.host,
        smtp_starttls.port,
        SENDER,
        TO[:1],
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        ssl_context=smtp_starttls.client_context,
    )
    channel.send(event)
    [got] = smtp_starttls.handler.messages
    assert got.tls
    assert got.authenticated and got.login == SMTP_USER.encode()
    assert parse(got.content)["Subject"] == "strongroom: backup of shop FAILED"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_and_auth(smtp_implicit_tls: SmtpServer, event: Event) -> None:
    channel = EmailChannel(
        smtp_implicit_tls.host,
        smtp_implicit_tls.port,
        SENDER,
        TO[:1],
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        ssl=True,
        ssl_context=smtp_implicit_tls.client_context,
    )
    channel.send(event)
    [got] = smtp_implicit_tls.handler.messages
    assert got.tls and got.authenticated


def test_untrusted_certificate_is_permanent(smtp_starttls: SmtpServer, event: Event) -> None:
    channel = EmailChannel(
        smtp_starttls.host,
        smtp_starttls.port,
        SENDER,
        TO,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        timeout=5,
    )  # default trust store: the self-signed cert is not trusted
    with pytest.raises(NotificationError) as info:
        channel.send(event)
    assert info.value.transient is False
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert smtp_starttls.handler.messages == []


def test_wrong_password(
    smtp_starttls: SmtpServer, event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-Pa55word-123"
    channel = EmailChannel(
        smtp_starttls.host,
        smtp_starttls.port,
        SENDER,
        TO,
        username=SMTP_USER,
        password=wrong,
        timeout=5,
        ssl_context=smtp_starttls.client_context,
    )
    with pytest.raises(NotificationError) as info:
        channel.send(event)
    message = str(info.value)
    assert "login as 'alerts@example.com' refused" in message and "535" in message
    assert wrong not in message and wrong not in repr(channel)
    assert info.value.transient is False

    sleeps: list[float] = []
    with caplog.at_level(logging.DEBUG):
        [result] = Notifier([channel], sleep=sleeps.append).notify(event)
    assert not result.ok and result.attempts == 1 and sleeps == []  # not retried
    assert wrong not in caplog.text and wrong not in (result.error or "")
    assert smtp_starttls.handler.messages == []


def test_server_down_is_retried_then_reported(
    event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    channel = EmailChannel(
        "127.0.0.1",
        free_port(),
        SENDER,
        TO,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        timeout=2,
    )
    sleeps: list[float] = []
    with caplog.at_level(logging.WARNING, logger="strongroom.notify"):
        [result] = Notifier([channel], attempts=3, base_delay=0.5, sleep=sleeps.append).notify(
            event
        )
    assert result.channel == "email"
    assert not result.ok and result.attempts == 3
    assert result.error and "ConnectionRefusedError" in result.error
    assert sleeps == [0.5, 1.0]
    assert len(caplog.records) == 3
    assert "failed after 3 attempts" in caplog.records[-1].getMessage()
    assert SMTP_PASSWORD not in caplog.text


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="recipient"):
        EmailChannel("h", 25, SENDER, [])
    with pytest.raises(ValueError, match="without a username"):
        EmailChannel("h", 25, SENDER, TO, password="x")
    assert EmailChannel("h", 25, SENDER, "one@example.com").recipients == ("one@example.com",)
