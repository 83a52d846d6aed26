"""Files browsers fetch on their own, without signing in: ``/favicon.ico``.

(The page icon itself is ``/static/favicon.svg``, linked from every page; browsers that
ignore the link ask for ``/favicon.ico`` at the site's root.)"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
ICON = STATIC / "favicon.ico"  # 16, 32 and 48 px PNGs in an ICO container
ICON_AGE = 86_400  # seconds browsers may keep it

router = APIRouter()


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The site's icon (``image/x-icon``); public, like any static file."""
    return FileResponse(
        ICON, media_type="image/x-icon", headers={"Cache-Control": f"public, max-age={ICON_AGE}"}
    )
