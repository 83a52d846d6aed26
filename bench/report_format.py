"""Formatting of the benchmark's figures and tables (plain text for stdout, Markdown)."""

from __future__ import annotations

from collections.abc import Sequence

from results_model import MB, Target


def mb(value: int | float | None) -> str:
    return "-" if value is None else f"{value / MB:,.1f} MB"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def load(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fx(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    out = [cells(header)]
    out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    out.extend(cells(r) for r in rows)
    return out


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False)]
        return "  ".join(parts)

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f} %"


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def verdict(target: Target) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[target.passed]


def target_value(target: Target) -> str:
    if target.value is None:
        return "-"
    if target.unit == "x":
        return f"{target.value:.2f}x"
    if target.unit == "%":
        return f"{target.value:.2f} %"
    return f"{target.value:.0f} {target.unit}"


def target_limit(target: Target) -> str:
    if target.unit == "x":
        return f"<= {target.limit:g}x"
    if target.unit == "%":
        return f"<= {target.limit:g} %"
    return f"<= {target.limit:g} {target.unit}"
