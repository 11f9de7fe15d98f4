"""A client-side request rate limit shared by the threads (or coroutines) of one hook."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Spaces request starts evenly so that at most ``per_minute`` start in any minute (0 = no limit)."""

    def __init__(self, per_minute: float = 0.0):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next free slot; return how many seconds to wait before sending."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        return slot - now
