"""The dashboard's charts: what each one shows and how it is labelled.

The charts are drawn in the browser by ``static/charts.js`` with the vendored uPlot, from
``GET /api/targets/{name}/history``; this module gives the page each chart's title,
caption and axis labels (the same words in the page and in the tests), and the context of
one target's card (``templates/_target_card.html``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from strongroom.web.api.schemas import TargetSummary
from strongroom.web.api.targets import ALL, restore_checks
from strongroom.web.context import WebContext


@dataclass(frozen=True)
class Chart:
    """One chart of a target's card.

    ``kind`` selects the drawing in charts.js ("size", "duration", "runs"); ``y_label``
    is completed there with the unit the values are drawn in (e.g. "stored (MiB)");
    ``x_label`` names the time zone of the time axis."""

    kind: str
    title: str
    caption: str
    y_label: str
    x_label: str
    empty: str  # the sentence shown instead of a chart without data


def charts_for(timezone: str) -> list[Chart]:
    """The charts of every target's card, with the time axis in ``timezone`` (an IANA
    name such as ``Europe/Berlin``, or ``UTC``)."""
    finished = f"backup finished ({timezone} time)"
    return [
        Chart(
            "size",
            "Stored size",
            "Bars: new bytes stored by each backup (what it added after deduplication). "
            "Line: cumulative, the running total of those bytes over the kept backups.",
            "stored",
            finished,
            "No backups yet: sizes appear after the first backup.",
        ),
        Chart(
            "duration",
            "Backup duration",
            "Time each backup took, from the start of the dump to the stored manifest.",
            "duration",
            finished,
            "No backups yet: durations appear after the first backup.",
        ),
        Chart(
            "runs",
            "Backup runs: succeeded and failed",
            "Every recorded backup run (scheduled, manual, web or API); a failed run "
            "made no backup.",
            "outcome",
            f"run finished ({timezone} time)",
            "No backup runs recorded yet.",
        ),
    ]


def history_url(name: str) -> str:
    """The JSON route the charts of target ``name`` read: the name quoted whole (``/``
    as ``%2F``, ``%`` as ``%25``); the route takes it as a path parameter, so a name with
    ``/`` (decoded by the server before routing) matches too."""
    return f"/api/targets/{quote(name, safe='')}/history"


def card_url(name: str) -> str:
    """The route that renders target ``name``'s card again (``_target_card.html``),
    quoted like :func:`history_url`."""
    return f"/ui/targets/{quote(name, safe='')}/card"


def card_context(ctx: WebContext, target: TargetSummary) -> dict[str, Any]:
    """What ``_target_card.html`` renders for one target: its summary, chart labels,
    the history URL and time zone for charts.js, and its newest restore drill and
    verification (``RestoreCheck`` or ``None``) from the manifest index."""
    drill, newest = restore_checks(ctx.index.backups(target=target.name, limit=ALL))
    return {
        "target": target,
        "charts": charts_for(ctx.settings.timezone),
        "history_url": history_url(target.name),
        "card_url": card_url(target.name),
        "timezone": ctx.settings.timezone,
        "drill": drill,
        "verification": newest,
    }
