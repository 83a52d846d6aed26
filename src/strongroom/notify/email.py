"""Email over SMTP: implicit TLS, STARTTLS (required unless disabled) and AUTH.

The password is only handed to :mod:`smtplib`; it never appears in errors or logs.
"""

from __future__ import annotations

import smtplib
import ssl as ssl_module
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from strongroom.notify.base import NotificationError, scrub
from strongroom.notify.events import Event


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip("<> ") or "strongroom.invalid"


def email_body(event: Event) -> str:
    """The plain-text body: summary, where and when, then every detail."""
    rows = [("Target", event.target), ("Host", event.host), ("Time", event.occurred_at)]
    rows.append(("Event", event.kind))
    width = max(len(label) for label, _ in rows)
    lines = [event.summary, ""]
    lines += [f"{label + ':':<{width + 1}} {value}" for label, value in rows]
    details = event.detail_lines()
    if details:
        dwidth = max(len(label) for label, _ in details)
        lines += ["", "Details:"]
        lines += [f"  {label + ':':<{dwidth + 1}} {value}" for label, value in details]
    lines += ["", "-- ", "Sent by strongroom."]
    return "\n".join(lines) + "\n"


class EmailChannel:
    """Sends each event as one plain-text email to ``recipients``."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        ssl: bool = False,
        timeout: float = 15.0,
        name: str = "email",
        ssl_context: ssl_module.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients:
            raise ValueError("email channel needs at least one recipient")
        if password is not None and not username:
            raise ValueError("an SMTP password was given without a username")
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username
        self.starttls = starttls
        self.ssl = ssl
        self.timeout = timeout
        self._password = password
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname

    def __repr__(self) -> str:
        return f"EmailChannel(name={self.name!r}, server={self.host}:{self.port})"

    def build_message(self, event: Event) -> EmailMessage:
        """The message for ``event`` (subject is :meth:`Event.title`)."""
        msg = EmailMessage()
        msg["Subject"] = event.title()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid("strongroom", domain=_domain(self.sender))
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Strongroom-Event"] = event.kind
        msg.set_content(email_body(event))
        return msg

    def send(self, event: Event) -> None:
        """Deliver ``event``; raise ``NotificationError`` (password-free) on any failure."""
        msg = self.build_message(event)
        where = f"{self.name} smtp://{self.host}:{self.port}"
        secrets = (self._password,) if self._password else ()
        try:
            self._deliver(msg)
        except NotificationError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            reply = scrub(_reply_text(exc), secrets)
            raise NotificationError(
                f"{where}: login as {self.username!r} refused: {reply}", transient=False
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(sorted(exc.recipients))
            raise NotificationError(
                f"{where}: all recipients refused: {refused}", transient=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            reply = scrub(_reply_text(exc), secrets)
            raise NotificationError(
                f"{where}: server said {reply}", transient=400 <= exc.smtp_code < 500
            ) from None
        except (smtplib.SMTPNotSupportedError, ssl_module.SSLError) as exc:
            detail = scrub(str(exc), secrets)
            raise NotificationError(
                f"{where}: {type(exc).__name__}: {detail}", transient=False
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            detail = scrub(str(exc), secrets) or "no detail"
            raise NotificationError(f"{where}: {type(exc).__name__}: {detail}") from None

    def _connect(self) -> smtplib.SMTP:
        if self.ssl:
            context = self._ssl_context or ssl_module.create_default_context()
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self._local_hostname,
                timeout=self.timeout,
                context=context,
            )
        return smtplib.SMTP(
            self.host, self.port, local_hostname=self._local_hostname, timeout=self.timeout
        )

    def _deliver(self, msg: EmailMessage) -> None:
        with self._connect() as smtp:
            smtp.ehlo()
            if self.starttls and not self.ssl:
                if not smtp.has_extn("starttls"):
                    raise NotificationError(
                        f"{self.name} smtp://{self.host}:{self.port}: server does not offer"
                        " STARTTLS (set starttls=false to send without TLS)",
                        transient=False,
                    )
                smtp.starttls(context=self._ssl_context or ssl_module.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password or "")
            refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=list(self.recipients))
        if refused:
            names = ", ".join(sorted(refused))
            raise NotificationError(
                f"{self.name} smtp://{self.host}:{self.port}: delivered to"
                f" {len(self.recipients) - len(refused)} of {len(self.recipients)} recipients;"
                f" refused: {names}",
                transient=False,
            )


def _reply_text(exc: smtplib.SMTPResponseException) -> str:
    raw = exc.smtp_error
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return f"{exc.smtp_code} {text}"
