"""The chart of the daily simulation: cumulative stored bytes per day, gzip files against the
strongroom repository."""

from __future__ import annotations

from pathlib import Path

from results_model import MB, Results
from targets import TARGETS


def draw_chart(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d.day for d in res.days]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(
        days, [d.gzip_cumulative / MB for d in res.days], marker="o", ms=3, label="pg_dump | gzip"
    )
    ax.plot(
        days,
        [d.strongroom_repo_bytes / MB for d in res.days],
        marker="o",
        ms=3,
        label="strongroom repository",
    )
    full = res.days_summary["full_gzip_bytes"] / MB
    limit = TARGETS["days_storage"][1]
    ax.axhline(
        limit * full, color="grey", ls="--", lw=1, label=f"target: {limit:g}x one full gzip dump"
    )
    ax.set_xlabel("day (one backup a day)")
    ax.set_ylabel("cumulative stored MB")
    s = res.days_summary
    ax.set_title(
        f"Stored bytes over {s['days']} days — {s['database_bytes'] / MB:,.0f} MB database, "
        "~1 % new rows/day"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
