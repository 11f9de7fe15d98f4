"""Per-key request limits of the sandbox panel, as real panels enforce them (off unless asked for).

``SandboxPanel(rate_limits={"add": (600, 60)})`` allows at most 600 ``add`` requests per API key in
any 60 seconds (a sliding-window log per action and key, like the client's budgets). A request over
the limit is answered HTTP 429 ``{"error": "Too many requests"}`` and NOT processed; the refusal
itself does not count against the window. Every reply of a limited action carries the headers real
panels send:

=========================  ==============================================================
``X-RateLimit-Limit``      the limit (requests per window)
``X-RateLimit-Remaining``  requests still allowed now, after this one
``X-RateLimit-Reset``      seconds (whole, rounded up) until the oldest request leaves the window
``Retry-After``            on a 429 only: the same seconds, the earliest moment worth trying
=========================  ==============================================================

Actions without a limit get no headers. The counters (``allowed``, ``refused``, per action) are
what tests and benchmarks read. Time comes from ``clock`` (seconds, monotonic): tests give a fake
one, so that no test waits for a window to pass.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from airflow_provider_mirpanel.sandbox.actions import Reply

TOO_MANY_REQUESTS = "Too many requests"


@dataclass(frozen=True)
class Verdict:
    """What the limit of one action says about one request."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # whole seconds until the oldest request in the window leaves it (0: the window is empty)

    @property
    def headers(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers of the reply (and ``Retry-After`` on a refusal)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset))
        return headers

    def refusal(self) -> Reply:
        """Return the 429 a refused request gets."""
        reply = Reply.of({"error": TOO_MANY_REQUESTS}, 429)
        reply.headers.update(self.headers)
        return reply


class RateLimits:
    """Sliding-window limits per action and API key: action → (requests, per seconds).

    :param limits: e.g. ``{"add": (600, 60), "status": (120, 60)}``; actions not named are unlimited.
    :param clock: seconds from any origin, never going back (default ``time.monotonic``).
    """

    def __init__(self, limits: Mapping[str, tuple[int, float]], clock: Callable[[], float] = time.monotonic):
        for action, (limit, per) in limits.items():
            if limit < 1 or per <= 0:
                raise ValueError(f"rate limit of {action!r} must be >= 1 request per > 0 seconds, got {limit}/{per}")
        self.limits = {action: (int(limit), float(per)) for action, (limit, per) in limits.items()}
        self.clock = clock
        self.allowed: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._starts: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.limits)

    def check(self, key: str, action: str) -> Verdict | None:
        """Count a request of ``action`` with ``key``; None when the action has no limit."""
        if action not in self.limits:
            return None
        limit, per = self.limits[action]
        with self._lock:
            now = self.clock()
            starts = self._starts.setdefault((key, action), deque())
            while starts and starts[0] + per <= now:
                starts.popleft()
            allowed = len(starts) < limit
            if allowed:
                starts.append(now)
                self.allowed[action] += 1
            else:
                self.refused[action] += 1
            remaining = limit - len(starts)
            reset = math.ceil(starts[0] + per - now) if starts else 0
            return Verdict(allowed, limit, remaining, reset)

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{"allowed": {action: n}, "refused": {action: n}}`` since the start or the last reset."""
        with self._lock:
            return {"allowed": dict(self.allowed), "refused": dict(self.refused)}

    def reset(self) -> None:
        """Forget the counters and every window (all keys start with a full allowance)."""
        with self._lock:
            self.allowed.clear()
            self.refused.clear()
            self._starts.clear()


def parse_limit(text: str) -> tuple[str, tuple[int, float]]:
    """``add=600`` (per minute) or ``services=10/3600`` (per that many seconds) → (action, (limit, per)).

    :raises ValueError: not of that form.
    """
    action, _, value = text.partition("=")
    limit, _, per = value.partition("/")
    try:
        parsed = (int(limit), float(per) if per else 60.0)
    except ValueError:
        parsed = (0, 0.0)
    if not action.strip() or parsed[0] < 1 or parsed[1] <= 0:
        raise ValueError(f"a rate limit is ACTION=REQUESTS[/SECONDS] (e.g. add=600 or services=10/3600), got {text!r}")
    return action.strip(), parsed
