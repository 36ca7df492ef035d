"""Statistics and plain-text tables shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values))

    @property
    def spread_pct(self) -> float:
        """Half the min-max range, as a percentage of the median."""
        return 50.0 * (self.high - self.low) / self.median if self.median > 0 else 0.0


def status(text: str) -> None:
    """A transient progress line on stderr, only when it is a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K  {text}")
        sys.stderr.flush()


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> None:
    """Print columns; column 0 left-aligned, the others right-aligned (``right`` and after)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i >= right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "   ".join(parts).rstrip()

    print(line(header))
    print("  " + "   ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
