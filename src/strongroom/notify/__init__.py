"""Notification senders: Slack, signed JSON webhook and email, plus a never-raising dispatcher.

This package only *sends*; deciding when to notify belongs to the caller (services, daemon).
"""

from __future__ import annotations

from strongroom.notify.base import Channel, NotificationError
from strongroom.notify.dispatch import DeliveryResult, Notifier
from strongroom.notify.events import Event, EventKind

__all__ = ["Channel", "DeliveryResult", "Event", "EventKind", "NotificationError", "Notifier"]
