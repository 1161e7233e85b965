"""Terminal output helpers for the CLI: tables on stdout through rich."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str | None = None
) -> None:
    """Print a table with a title; numbers are right-aligned."""
    table = Table(title=title, caption=caption, caption_justify="left")
    for i, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], (int, float)) for r in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[format_cell(v) for v in row])
    Console(width=160).print(table)


def format_cell(value: object) -> str:
    """Readable cell text: thousands separators for ints, 4 significant digits for floats."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def human_count(n: float) -> str:
    """1234567 → '1.23 M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"
