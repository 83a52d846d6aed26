from __future__ import annotations

import json
import time

import pytest

from strongroom.notify.base import NotificationError
from strongroom.notify.events import Event
from strongroom.notify.webhook import WebhookChannel, sign, verify_signature
from tests.notify.conftest import Receiver

SECRET = "whsec-0123456789abcdef"


def test_signed_post(receiver: Receiver, event: Event) -> None:
    before = int(time.time())
    WebhookChannel(receiver.url + "/hooks/strongroom", SECRET).send(event)

    [req] = receiver.requests
    assert req.path == "/hooks/strongroom"
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["x-strongroom-event"] == "backup_failed"
    ts = int(h["x-strongroom-timestamp"])
    assert before <= ts <= int(time.time())
    assert len(h["x-strongroom-delivery"]) == 32
    # body: the event JSON, sorted and compact
    data = json.loads(req.body)
    assert req.body == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    assert data == event.to_json_dict()
    # signature verifies, and only for the exact bytes, secret and a fresh timestamp
    sig = h["x-strongroom-signature"]
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(SECRET, h["x-strongroom-timestamp"], req.body, sig)
    assert verify_signature(SECRET, ts, req.body.decode(), sig)
    tampered = req.body.replace(b"FAILED", b"fine!!")
    assert not verify_signature(SECRET, ts, tampered, sig)
    assert not verify_signature("other-secret", ts, req.body, sig)
    assert not verify_signature(SECRET, ts + 1, req.body, sig)
    assert not verify_signature(SECRET, ts, req.body, sig, now=ts + 301)
    assert not verify_signature(SECRET, ts, req.body, sig, now=ts - 301)
    assert verify_signature(SECRET, ts, req.body, sig, now=ts + 299)
    assert not verify_signature(SECRET, "yesterday", req.body, sig)
    assert not verify_signature(SECRET, ts, req.body, sig.removeprefix("sha256="))


def test_signature_scheme_is_documented_formula() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == "sha256=" + expected


def test_delivery_id_stable_across_retries(receiver: Receiver, event: Event) -> None:
    channel = WebhookChannel(receiver.url, None)
    channel.send(event)
    channel.send(event)
    a, b = receiver.requests
    assert a.headers["x-strongroom-delivery"] == b.headers["x-strongroom-delivery"]


def test_unsigned_and_custom_headers(receiver: Receiver, event: Event) -> None:
    channel = WebhookChannel(
        receiver.url, None, headers={"Authorization": "Bearer tok-abcdefgh12345"}
    )
    channel.send(event)
    [req] = receiver.requests
    assert "x-strongroom-signature" not in req.headers
    assert req.headers["authorization"] == "Bearer tok-abcdefgh12345"


def test_reserved_headers_rejected(receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="X-Strongroom-Signature"):
        WebhookChannel(receiver.url, None, headers={"X-Strongroom-Signature": "x"})


def test_error_redacts_url_token_and_secrets(receiver: Receiver, event: Event) -> None:
    receiver.fail_first, receiver.fail_status = 1, 503
    receiver.fail_body = b"bad token=qq-url-token-qq, bearer tok-abcdefgh12345"
    url = receiver.url + "/hook?token=qq-url-token-qq"
    channel = WebhookChannel(url, SECRET, headers={"Authorization": "Bearer tok-abcdefgh12345"})
    with pytest.raises(NotificationError) as info:
        channel.send(event)
    message = str(info.value)
    assert "HTTP 503" in message and info.value.transient
    assert "qq-url-token-qq" not in message
    assert "tok-abcdefgh12345" not in message
    assert SECRET not in repr(channel)
