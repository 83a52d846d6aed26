"""Templates and the filters pages use (sizes, durations, times).

Every time a page shows goes through the ``when`` filter, which prints it in the configured
time zone (``Settings.timezone``, default UTC) with the zone's abbreviation, e.g.
``2026-03-29 03:30 CEST``; :func:`render` puts the zone's name in every page's context
(``timezone``) for the note in the page footer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context

from strongroom.repository.ids import parse_iso
from strongroom.web.auth import Principal, csrf_token, current_principal
from strongroom.wording import counted

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))

TIMEZONE_KEY = "timezone"  # the template context's key for the zone's name


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@lru_cache(maxsize=32)
def zone_named(name: str | None) -> tzinfo:
    """The time zone called ``name`` (an IANA name such as ``Europe/Berlin``); UTC for
    ``None``, an empty name or a name this system does not know."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def short_time(moment: str | datetime | None, zone: tzinfo = UTC) -> str:
    """``2026-03-29 03:30 CEST``: an ISO 8601 time (or a datetime) in ``zone``, to the
    minute, with the zone's abbreviation at that moment (so both sides of a daylight-saving
    change read unambiguously). A time without an offset is taken as UTC (as stored); a
    numeric abbreviation reads ``UTC-03``; ``-`` for nothing; text that is not a time is
    returned as it is."""
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, datetime):
        parsed = moment
    else:
        try:
            parsed = parse_iso(moment)
        except ValueError:
            return moment
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    local = parsed.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {zone_abbreviation(local)}".strip()


def zone_abbreviation(local: datetime) -> str:
    """``CEST`` for an aware time; ``UTC-03`` where the zone has only a numeric name."""
    abbreviation = local.tzname() or ""
    return f"UTC{abbreviation}" if abbreviation[:1] in ("+", "-") else abbreviation


def zone_of(context: Context | dict[str, Any]) -> tzinfo:
    """The page's time zone: the context's ``timezone`` (set by :func:`render`), else the
    app's configured one through the context's request, else UTC."""
    name = context.get(TIMEZONE_KEY)
    if isinstance(name, str) and name:
        return zone_named(name)
    request = context.get("request")
    return zone_named(_configured_zone(request) if isinstance(request, Request) else None)


def _configured_zone(request: Request) -> str | None:
    ctx = getattr(request.app.state, "ctx", None)
    settings = getattr(ctx, "settings", None)
    zone = getattr(settings, "timezone", None)
    return zone if isinstance(zone, str) else None


@pass_context
def when(context: Context, moment: str | datetime | None) -> str:
    """The ``when`` filter: :func:`short_time` in the page's zone (:func:`zone_of`)."""
    return short_time(moment, zone_of(context))


templates.env.filters["bytes"] = human_bytes
templates.env.filters["seconds"] = human_seconds
templates.env.filters["when"] = when
templates.env.filters["fromjson"] = json.loads
templates.env.globals["counted"] = counted


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render a template with the caller, the CSRF token, the page's path and the
    configured time zone's name (``timezone``)."""
    principal: Principal | None = current_principal(request)
    values = {
        "request": request,
        "user": principal,
        "csrf": csrf_token(request),
        "path": request.url.path,
        TIMEZONE_KEY: _configured_zone(request) or "UTC",
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, values, status_code=status)


def render_error(request: Request, status: int, message: str) -> HTMLResponse:
    if request.headers.get("HX-Request"):
        return render(request, "_error.html", {"status": status, "message": message}, status)
    return render(request, "error.html", {"status": status, "message": message}, status)
