"""The benchmark's one table: rows, their checks, and the console, CSV and Markdown forms."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("case", "N", "requests", "wall", "ideal", "ratio", "peak memory", "target", "ok", "note")


@dataclass
class Row:
    """One measured case.

    ``wall`` and ``ideal`` are seconds (None when a time means nothing for the case); ``ratio`` is
    what the target is stated on (wall/ideal, or parse time/``json.loads`` time, or peak/records
    memory). ``correct`` is False when the case produced wrong results or request counts: that
    fails the run. ``met`` is whether the performance target held (None: no target).
    """

    case: str
    n: int
    requests: int | None = None
    wall: float | None = None
    ideal: float | None = None
    ratio: float | None = None
    peak_memory: int | None = None
    target: str = ""
    met: bool | None = None
    correct: bool = True
    note: str = ""
    problems: list[str] = field(default_factory=list)

    def check(self, condition: bool, problem: str) -> None:
        """Record a correctness problem when ``condition`` is False."""
        if not condition:
            self.correct = False
            self.problems.append(problem)

    @property
    def verdict(self) -> str:
        if not self.correct:
            return "WRONG"
        if self.met is None:
            return "ok"
        return "met" if self.met else "MISSED"

    def cells(self) -> list[str]:
        note = "; ".join([*self.problems, self.note] if self.problems else [self.note])
        return [
            self.case,
            f"{self.n:,}",
            _int(self.requests),
            _seconds(self.wall),
            _seconds(self.ideal),
            "" if self.ratio is None else f"{self.ratio:.2f}",
            _bytes(self.peak_memory),
            self.target,
            self.verdict,
            note,
        ]


def _int(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _bytes(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f} MiB"


def console(rows: Sequence[Row]) -> str:
    """The table as aligned text columns (the note last, unpadded)."""
    lines = [list(COLUMNS), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
        if index == 0:
            out.append("  ".join("-" * width for width in widths) + "  " + "-" * 4)
    return "\n".join(out)


def markdown(rows: Sequence[Row]) -> str:
    """The table in GitHub Markdown."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    right = {"N", "requests", "wall", "ideal", "ratio", "peak memory"}
    rule = "|" + "|".join("---:" if column in right else "---" for column in COLUMNS) + "|"
    return "\n".join([line(COLUMNS), rule, *(line(row.cells()) for row in rows)]) + "\n"


def csv_text(rows: Sequence[Row]) -> str:
    """The table as CSV, with raw numbers (seconds, bytes) rather than formatted ones."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["case", "N", "requests", "wall_s", "ideal_s", "ratio", "peak_memory_bytes", "target", "ok", "note"]
    )
    for row in rows:
        writer.writerow(
            [
                row.case,
                row.n,
                row.requests,
                row.wall,
                row.ideal,
                row.ratio,
                row.peak_memory,
                row.target,
                row.verdict,
                row.cells()[-1],
            ]
        )
    return buffer.getvalue()


def write(rows: Sequence[Row], directory: Path, stem: str, preface: str = "") -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` (``preface`` above the Markdown table) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.csv", directory / f"{stem}.md"]
    paths[0].write_text(csv_text(rows))
    paths[1].write_text((preface + "\n\n" if preface else "") + markdown(rows))
    return paths
