"""Client-side request budgets shared by the threads (or coroutines) of one hook.

Panels publish their limits per API key and per action (MirPanel: ``add`` 60 a minute, ``status``
120, ``balance`` 30, ``services`` 10 an hour) and answer a request over a limit with HTTP 429. A
:class:`Budget` is "at most ``limit`` request starts in any ``per`` seconds", kept as a sliding-window
log of the last ``limit`` starts: a burst within the budget goes at once (ten ``services`` calls are
not spaced six minutes apart), a long run is paced to the budget, and no window of ``per`` seconds —
aligned to the minute or not — ever holds more than ``limit`` starts, so it suits panels that count
in fixed windows and those that count in sliding ones.

A :class:`RateLimiter` holds one window per action (the defaults are the published limits, see
:data:`DEFAULT_BUDGETS`) and optionally one overall cap for all actions (the ``rate_limit``
connection extra, requests evenly spaced). Nothing here does network I/O; time comes from a
:class:`Clock`, which tests replace so that they never sleep.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from airflow_provider_mirpanel.client import defaults

#: The largest ``limit`` a budget may have (its window keeps that many start times); for more, no budget.
MAX_LIMIT = 1_000_000
#: Pauses at least this long are logged, once per pause (not once per waiting thread); shorter ones,
#: such as those of an evenly spaced ``rate_limit`` of more than 12 a minute, are not.
LOGGED_PAUSE = 5.0


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` request starts in any window of ``per`` seconds."""

    limit: int
    per: float

    def __str__(self) -> str:
        return defaults.budget_text(self.limit, self.per)

    @classmethod
    def per_minute(cls, requests: float) -> Budget:
        """Make the budget of ``requests`` (> 0) a minute.

        A whole number N is N in any 60 s; a fraction is spaced evenly (``0.5`` is one request in any 120 s).
        """
        if requests >= 1 and requests == int(requests):
            return cls(int(requests), 60.0)
        return cls(1, 60.0 / requests)


#: The default budget of each action (``defaults.DEFAULT_RATE_LIMITS``: the published limits).
DEFAULT_BUDGETS: Mapping[str, Budget] = MappingProxyType(
    {action: Budget(limit, per) for action, (limit, per) in defaults.DEFAULT_RATE_LIMITS.items()}
)


class Log(Protocol):
    """Where a pause is announced: a ``logging.Logger``, or Airflow's logger of a hook."""

    def info(self, msg: str, /, *args: Any) -> Any:
        """Log ``msg`` at INFO level."""


class Clock(Protocol):
    """Where a limiter reads the time and how it waits (tests give a fake one)."""

    def monotonic(self) -> float:
        """Return seconds of a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (in a thread)."""

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` (in a coroutine)."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.sleep`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait with ``time.sleep``."""
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """Wait with ``asyncio.sleep``."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class Window:
    """The log of one budget: the last ``limit`` request starts."""

    def __init__(self, name: str, budget: Budget):
        self.name = name
        self.budget = budget
        self._starts: deque[float] = deque(maxlen=budget.limit)

    def wait(self, now: float) -> float:
        """Seconds until one more start fits the budget (0: it fits now)."""
        if len(self._starts) < self.budget.limit:
            return 0.0
        return max(0.0, self._starts[0] + self.budget.per - now)

    def record(self, now: float) -> None:
        """Count a request started at ``now``."""
        self._starts.append(now)


class Pause(NamedTuple):
    """Why a request may not start yet: how long to wait, which budget is used up, whether to log it."""

    seconds: float
    budget: str
    announce: bool


class RateLimiter:
    """The request budgets of one hook: a window per action and an optional overall cap.

    A request of an action without a budget (or any request, with no budgets at all) starts at once,
    subject only to the overall cap. Thread-safe; for coroutines use :meth:`await_turn` (it never
    blocks the event loop).

    :param budgets: action name → its :class:`Budget`.
    :param per_minute: overall cap for all actions together, evenly spaced (0: none).
    :param clock: where time comes from.
    """

    def __init__(self, budgets: Mapping[str, Budget] | None = None, per_minute: float = 0.0,
                 clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        self._windows = {action: Window(f"{action!r} ({budget})", budget)
                         for action, budget in (budgets or {}).items()}
        # the overall cap keeps its meaning from before per-action budgets: starts evenly spaced
        self._overall = Window(f"overall rate_limit ({per_minute:g}/min, evenly spaced)",
                               Budget(1, 60.0 / per_minute)) if per_minute > 0 else None
        self._lock = threading.Lock()
        self._announced_until = float("-inf")

    def try_start(self, action: str) -> Pause | None:
        """Count a request of ``action`` as started now, if every budget it counts against allows it.

        Returns None then; otherwise counts nothing and says how long to wait.
        """
        with self._lock:
            now = self.clock.monotonic()
            windows = [window for window in (self._windows.get(action), self._overall) if window is not None]
            longest, blocking = max(((window.wait(now), window) for window in windows),
                                    key=lambda pair: pair[0], default=(0.0, None))
            if blocking is None or longest <= 0:
                for window in windows:
                    window.record(now)
                return None
            announce = longest >= LOGGED_PAUSE and now >= self._announced_until
            if announce:
                self._announced_until = now + longest
            return Pause(longest, blocking.name, announce)

    def wait(self, action: str, log: Log | None = None) -> float:
        """Block until a request of ``action`` may start, and count it; return the seconds waited."""
        waited = 0.0
        while (pause := self.try_start(action)) is not None:
            _announce(pause, action, log)
            self.clock.sleep(pause.seconds)
            waited += pause.seconds
        return waited

    async def await_turn(self, action: str, log: Log | None = None) -> float:
        """:meth:`wait` for coroutines: sleeps with the clock's ``asleep``, never blocking the loop."""
        waited = 0.0
        while (pause := self.try_start(action)) is not None:
            _announce(pause, action, log)
            await self.clock.asleep(pause.seconds)
            waited += pause.seconds
        return waited


class BudgetClock:
    """The ``clock`` property of a hook whose request budgets are a :class:`RateLimiter` in ``_limiter``."""

    _clock: Clock
    _limiter: RateLimiter

    @property
    def clock(self) -> Clock:
        """The time the request budgets are kept in (the system's; tests and benchmarks give a fake one)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = self._limiter.clock = clock


def _announce(pause: Pause, action: str, log: Log | None) -> None:
    if pause.announce and log is not None:
        log.info("Request budget %s used up: the next %r request waits %.1f s (connection extras "
                 "rate_limits / rate_limit)", pause.budget, action, pause.seconds)
