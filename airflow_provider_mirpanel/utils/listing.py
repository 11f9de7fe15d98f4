"""How operators and placements name many records in one log line or message. Nothing here talks to the panel."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def listing(items: Iterable[str], limit: int = 10) -> str:
    """Return ``a, b, c … (+5 more)``: at most ``limit`` items, then how many more."""
    shown = list(items)
    text = ", ".join(shown[:limit])
    return text + (f" … (+{len(shown) - limit} more)" if len(shown) > limit else "")


def errors_by(records: Iterable[Mapping[str, Any]], id_field: str) -> str:
    """``12, 13 (Incorrect order ID); 40 (Refill not found)``: the failed records' IDs grouped by error text."""
    grouped: dict[str, list[str]] = {}
    for record in records:
        if record.get("error"):
            grouped.setdefault(str(record["error"]), []).append(str(record[id_field]))
    return "; ".join(f"{listing(ids)} ({error})" for error, ids in grouped.items())
