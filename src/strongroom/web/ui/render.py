"""Templates and the filters pages use (sizes, durations, times)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from strongroom.repository.ids import parse_iso
from strongroom.web.auth import Principal, csrf_token, current_principal

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))


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


def short_time(iso: str | None) -> str:
    """``2026-11-21 14:00 UTC`` from an ISO time."""
    if not iso:
        return "-"
    try:
        return parse_iso(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return iso


templates.env.filters["bytes"] = human_bytes
templates.env.filters["seconds"] = human_seconds
templates.env.filters["when"] = short_time
templates.env.filters["fromjson"] = json.loads


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render a template with the caller, the CSRF token and the page's path."""
    principal: Principal | None = current_principal(request)
    values = {
        "request": request,
        "user": principal,
        "csrf": csrf_token(request),
        "path": request.url.path,
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, values, status_code=status)


def render_error(request: Request, status: int, message: str) -> HTMLResponse:
    if request.headers.get("HX-Request"):
        return render(request, "_error.html", {"status": status, "message": message}, status)
    return render(request, "error.html", {"status": status, "message": message}, status)
