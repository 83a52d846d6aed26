from __future__ import annotations

import json
import logging

import httpx
import pytest

from strongroom.notify.base import NotificationError
from strongroom.notify.dispatch import Notifier
from strongroom.notify.events import Event
from strongroom.notify.slack import SlackChannel, slack_payload
from tests.notify.conftest import Receiver

SECRET_PATH = "/services/T0000/B0000/XXXXsecretTOKENxxxx"


def test_posts_incoming_webhook_payload(receiver: Receiver, event: Event) -> None:
    SlackChannel(receiver.url + SECRET_PATH).send(event)

    [req] = receiver.requests
    assert req.path == SECRET_PATH
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("strongroom/")
    payload = json.loads(req.body)
    assert payload["text"].startswith("strongroom: backup of shop FAILED: pg_dump exited")
    header, summary, facts, details = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "strongroom: backup of shop FAILED"},
    }
    assert summary["text"]["text"] == "pg_dump exited with status 1"
    assert [f["text"] for f in facts["fields"]] == [
        "*Target*\nshop",
        "*Host*\ndb1",
        "*Time*\n2026-11-21T14:00:00Z",
        "*Event*\nbackup_failed",
    ]
    texts = [f["text"] for f in details["fields"]]
    assert "*backup id*\n20261121T140000Z-3f9a2c1b" in texts
    assert "*raw size*\n1536 bytes (1.5 KiB)" in texts
    assert "*change percent*\n-12.5%" in texts
    assert "hunter2" not in req.body.decode()


def test_payload_escapes_mrkdwn_and_splits_many_fields() -> None:
    details: dict[str, str | int | float | None] = {f"k{i}": i for i in range(23)}
    details["error"] = "<!channel> & <http://x|click>"
    ev = Event("verify_failed", "a<b>", "x & y", details, "t", "h")
    payload = slack_payload(ev)
    blob = json.dumps(payload)
    assert "<!channel>" not in blob and "&lt;!channel&gt; &amp;" in blob
    sections = payload["blocks"][3:]  # type: ignore[index]
    assert [len(s["fields"]) for s in sections] == [10, 10, 4]


def test_http_error_hides_webhook_secret(receiver: Receiver, event: Event) -> None:
    receiver.fail_first, receiver.fail_status = 1, 404
    receiver.fail_body = f"no_service for {SECRET_PATH}".encode()
    channel = SlackChannel(receiver.url + SECRET_PATH)
    with pytest.raises(NotificationError) as info:
        channel.send(event)
    message = str(info.value)
    assert "HTTP 404" in message and "no_service" in message
    assert f"slack http://127.0.0.1:{receiver.port}/…" in message
    assert "XXXXsecretTOKENxxxx" not in message
    assert "XXXXsecretTOKENxxxx" not in repr(channel)
    assert info.value.transient is False


def test_unreachable_is_transient_and_redacted(event: Event) -> None:
    from tests.notify.conftest import free_port

    channel = SlackChannel(f"http://127.0.0.1:{free_port()}{SECRET_PATH}", timeout=2)
    with pytest.raises(NotificationError) as info:
        channel.send(event)
    assert info.value.transient is True
    assert "XXXXsecretTOKENxxxx" not in str(info.value)


def test_uses_given_client(receiver: Receiver, event: Event) -> None:
    with httpx.Client(headers={"X-Proxy-Tag": "t1"}) as client:
        SlackChannel(receiver.url + SECRET_PATH, client=client).send(event)
    assert receiver.requests[0].headers["x-proxy-tag"] == "t1"


def test_retries_then_succeeds(
    receiver: Receiver, event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_first = 2
    sleeps: list[float] = []
    notifier = Notifier([SlackChannel(receiver.url + SECRET_PATH)], sleep=sleeps.append)
    with caplog.at_level(logging.INFO, logger="strongroom.notify"):
        [result] = notifier.notify(event)
    assert result.ok and result.attempts == 3 and result.error is None
    assert len(receiver.requests) == 3
    assert sleeps == [1.0, 2.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(r.name == "strongroom.notify" for r in warnings)
    assert "XXXXsecretTOKENxxxx" not in caplog.text


def test_invalid_url_rejected_without_leaking() -> None:
    with pytest.raises(ValueError) as info:
        SlackChannel("hooks.slack.com" + SECRET_PATH)
    assert "XXXXsecretTOKENxxxx" not in str(info.value)
