"""The campaign's table: printed, and written as ``faults.md`` and ``faults.json``.

``faults.json`` is the list of rows only, each with exactly the keys ``kind``, ``trials``,
``clean``, ``lost``, ``hung`` and ``unclear``. ``faults.md`` has the same table, the run's
seed, duration and machine, what each kind does, and one line per trial that was not
clean (kind, command, exit code, first line of its error output).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .trial import VERDICTS, Kind, Problem

ROW_KEYS = ("kind", "trials", "clean", "lost", "hung", "unclear")


@dataclass
class TrialRecord:
    kind: str
    index: int
    verdict: str
    seconds: float
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)


def rows(records: Sequence[TrialRecord], kinds: Sequence[Kind]) -> list[dict[str, int | str]]:
    out: list[dict[str, int | str]] = []
    for kind in kinds:
        mine = [r for r in records if r.kind == kind.name]
        row: dict[str, int | str] = {"kind": kind.name, "trials": len(mine)}
        for verdict in VERDICTS:
            row[verdict] = sum(1 for r in mine if r.verdict == verdict)
        out.append(row)
    return out


def totals(table: Sequence[dict[str, int | str]]) -> dict[str, int | str]:
    total: dict[str, int | str] = {"kind": "total"}
    for key in ROW_KEYS[1:]:
        total[key] = sum(int(row[key]) for row in table)
    return total


def text_table(table: Sequence[dict[str, int | str]]) -> str:
    width = max([len("kind"), *(len(str(row["kind"])) for row in table), len("total")])
    lines = [f"{'kind':<{width}}  " + "  ".join(f"{k:>7}" for k in ROW_KEYS[1:])]
    for row in [*table, totals(table)]:
        cells = "  ".join(f"{row[k]!s:>7}" for k in ROW_KEYS[1:])
        lines.append(f"{row['kind']!s:<{width}}  {cells}")
    return "\n".join(lines)


def detail_line(record: TrialRecord) -> str:
    problem = record.problem
    if problem is None:
        return f"- {record.kind} #{record.index}: {record.verdict}"
    code = "none (stopped)" if problem.exit_code is None else str(problem.exit_code)
    notes = f" [{'; '.join(record.notes)}]" if record.notes else ""
    message = problem.message.replace("|", "\\|").replace("`", "'")
    command = problem.command.replace("`", "'")
    return (
        f"- **{record.kind}** #{record.index} {record.verdict}: `{command}` exit {code}: "
        f"{message}{notes}"
    )


def landings(records: Sequence[TrialRecord], kinds: Sequence[Kind]) -> list[str]:
    """Where the kills of kinds that say so (a ``phase: …`` note) landed, counted."""
    lines: list[str] = []
    for kind in kinds:
        counts: dict[str, int] = {}
        for record in records:
            if record.kind != kind.name:
                continue
            for note in record.notes:
                if note.startswith("phase: "):
                    where = note.removeprefix("phase: ")
                    counts[where] = counts.get(where, 0) + 1
        if counts:
            lines += ["", f"## Where the kills of `{kind.name}` landed", ""]
            lines += ["| state the killed command left | trials |", "|---|---:|"]
            lines += [f"| {where} | {n} |" for where, n in sorted(counts.items())]
    return lines


def markdown(
    table: Sequence[dict[str, int | str]],
    records: Sequence[TrialRecord],
    kinds: Sequence[Kind],
    *,
    seed: int,
    seconds: float,
    workers: int,
    command: str,
    cpu_seconds: float,
    load: tuple[float, float],
) -> str:
    lines = [
        "# strongroom fault campaign",
        "",
        f"`{command}` — seed **{seed}** (rerun with `--seed {seed}`), "
        f"{sum(int(r['trials']) for r in table)} trials in **{seconds / 60:.1f} min** "
        f"({seconds:.0f} s) with {workers} workers on {os.cpu_count()} cores "
        f"({platform.machine()}, Python {platform.python_version()}); CPU time of the "
        f"harness and every strongroom command: {cpu_seconds / 60:.1f} min (the PostgreSQL "
        f"server's not included); load average {load[0]:.1f} at the start, {load[1]:.1f} at "
        "the end (other work on the machine stretches the duration).",
        "",
        "A trial is *clean* when every command succeeded or failed with exactly one "
        "`error:` line naming the problem and a documented exit code; *lost* when a listed "
        "backup does not verify afterwards, a listed backup vanished, or the target "
        "database was left changed or unusable; *hung* when a command did not exit within "
        "the per-command timeout; *unclear* otherwise (no or several `error:` lines, a "
        "traceback, an exit code outside 0-8/129/130/143, a secret in the output, damage "
        "blamed for a transient fault, a swap settled against its contract). See "
        '`bench/README.md`, "Fault campaign".',
        "",
        "| kind | trials | clean | lost | hung | unclear |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in [*table, totals(table)]:
        name = f"**{row['kind']}**" if row["kind"] == "total" else f"`{row['kind']}`"
        cells = " | ".join(str(row[key]) for key in ROW_KEYS[1:])
        lines.append(f"| {name} | {cells} |")
    lines += ["", "## Kinds", "", "| kind | what each trial does |", "|---|---|"]
    for kind in kinds:
        lines.append(f"| `{kind.name}` | {kind.describe} |")
    lines += landings(records, kinds)
    bad = [r for r in records if r.verdict != "clean"]
    lines += ["", f"## Trials that were not clean ({len(bad)})", ""]
    if not bad:
        lines.append("None.")
    for record in sorted(bad, key=lambda r: (r.kind, r.index)):
        lines.append(detail_line(record))
    return "\n".join(lines) + "\n"


def write(
    results: Path, table: Sequence[dict[str, int | str]], text: str, *, name: str = "faults"
) -> tuple[Path, Path]:
    results.mkdir(parents=True, exist_ok=True)
    json_path = results / f"{name}.json"
    md_path = results / f"{name}.md"
    plain = [{key: row[key] for key in ROW_KEYS} for row in table]
    json_path.write_text(json.dumps(plain, indent=2) + "\n")
    md_path.write_text(text)
    return md_path, json_path
