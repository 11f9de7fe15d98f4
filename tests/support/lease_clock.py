"""A lease clock that never sleeps: waiting moves its time on at once (wall and monotonic alike)."""

from __future__ import annotations

import threading
import time


class SkippingClock:
    """Real time plus everything slept so far: a claim's wait costs a test nothing, and still counts."""

    def __init__(self) -> None:
        self.skipped = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        return time.time() + self.skipped

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.skipped += seconds
