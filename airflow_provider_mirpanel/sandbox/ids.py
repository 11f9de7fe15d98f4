"""Where the sandbox panel's order and refill IDs come from.

A real panel never hands out an order ID twice, and a warehouse keyed by order ID relies on it. So
by default the sandbox takes its IDs from the clock (:class:`ClockIds`): a panel started later — a
restarted ``make sandbox``, the next test run — starts above every ID an earlier one handed out.
With a state file (:class:`IdFile`) the IDs stay small and continue where the last panel using the
file stopped. :class:`CountingIds` gives the same IDs in every run, for tests that name them.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Protocol

FIRST_ORDER_ID = 1000
FIRST_REFILL_ID = 1

#: Clock IDs count microseconds from here: 14-digit IDs, below 2**53 (exact in JSON readers) until 2311.
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()


class IdSource(Protocol):
    """Hands out increasing IDs of one kind (orders or refills)."""

    def take(self, count: int = 1) -> range:
        """``count`` new IDs (consecutive)."""
        ...


class CountingIds:
    """``first``, ``first + 1``, …: the same IDs in every run. A restarted panel hands them out again."""

    def __init__(self, first: int):
        self._next = first
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> range:
        """Hand out ``count`` IDs."""
        with self._lock:
            start = self._next
            self._next += count
        return range(start, start + count)


class ClockIds:
    """IDs from the wall clock, above every ID of the same kind handed out before in this process.

    An ID is the microseconds since 2026-01-01 UTC (or one more than the last, when that is higher).

    A panel started later, in this process or another, starts above every ID an earlier one handed
    out — unless that one handed out more than a million IDs per second (then its IDs ran ahead of
    the clock) or the system clock was set back.
    """

    _last: ClassVar[dict[str, int]] = {}  # per kind, for the whole process
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, kind: str):
        self.kind = kind

    def take(self, count: int = 1) -> range:
        """Hand out ``count`` IDs."""
        now = int((time.time() - EPOCH) * 1_000_000)
        with ClockIds._lock:
            start = max(ClockIds._last.get(self.kind, 0) + 1, now)
            ClockIds._last[self.kind] = start + count - 1
        return range(start, start + count)


class IdFile:
    """The next order and refill IDs, kept in a small JSON file: ``{"order": 1042, "refill": 7}``.

    A panel using the file continues where the last one stopped; a new file starts at ``first``.
    The file is written before IDs are handed out, so a panel killed at any moment never causes an ID
    to be handed out twice. One running panel per file.
    """

    def __init__(self, path: str | os.PathLike[str], first: dict[str, int]):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._next = dict(first)
        if self.path.exists():
            stored = json.loads(self.path.read_text() or "{}")
            for kind, value in stored.items():
                if kind in self._next:
                    self._next[kind] = max(int(value), self._next[kind])

    def source(self, kind: str) -> IdSource:
        """Return the IDs of one kind (``"order"`` or ``"refill"``)."""
        return _FileIds(self, kind)

    def take(self, kind: str, count: int) -> range:
        """Hand out ``count`` IDs of ``kind``."""
        with self._lock:
            start = self._next[kind]
            self._next[kind] = start + count
            self._save()
        return range(start, start + count)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        with os.fdopen(handle, "w") as file:
            json.dump(self._next, file)
        os.replace(temporary, self.path)


class _FileIds:
    def __init__(self, file: IdFile, kind: str):
        self._file = file
        self._kind = kind

    def take(self, count: int = 1) -> range:
        return self._file.take(self._kind, count)
