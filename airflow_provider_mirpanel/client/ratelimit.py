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
connection extra, requests evenly spaced). It also follows the panel (no shared state): after a 429
no request of that action starts before its ``Retry-After``, and while ``X-RateLimit-Remaining`` is
low the remaining requests are spread until ``X-RateLimit-Reset`` (:meth:`RateLimiter.after_reply`).
With a :class:`SharedBudget` (the ``budget_redis`` connection extra) each action's budget also
holds for the API key as a whole, across hooks, processes and machines. Nothing here does network
I/O but the shared budget's; time comes from a :class:`Clock`, which tests replace so that they
never sleep.
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
from airflow_provider_mirpanel.exceptions import MirPanelTransientError

#: The largest ``limit`` a budget may have (its window keeps that many start times); for more, no budget.
MAX_LIMIT = 1_000_000
#: Pauses at least this long are logged, once per pause (not once per waiting thread); shorter ones,
#: such as those of an evenly spaced ``rate_limit`` of more than 12 a minute, are not.
LOGGED_PAUSE = 5.0
#: A request the panel turned away for its rate limit (never processed) and told when to come back
#: (``Retry-After`` or ``X-RateLimit-Reset``, at most :data:`MAX_THROTTLE_WAIT` s) is sent again by the
#: hook after that wait, up to this many times in a row; any other throttle is an ordinary transient
#: failure, left to the retry policy (which retries it: a 429 leaves even an ``add`` unsent).
THROTTLED_RESENDS = 10
MAX_THROTTLE_WAIT = 300.0
#: While ``X-RateLimit-Remaining`` is at most this share of ``X-RateLimit-Limit`` (and at least 2
#: requests), the remaining requests are spread evenly until ``X-RateLimit-Reset``.
LOW_REMAINING = 0.1
#: An ``X-RateLimit-Reset`` above this is a Unix time (some servers send one), not seconds from now.
EPOCH_RESET = 10**9


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


class Headers(Protocol):
    """Reply headers, looked up case-insensitively (``requests``' and ``aiohttp``'s both are)."""

    def get(self, name: str, /) -> str | None:
        """Return the value of the header ``name``, or None."""


class SharedBudget(Protocol):
    """A budget every hook using the same API key shares (see :mod:`.shared_budget`)."""

    def acquire(self, action: str, budget: Budget, now: float) -> float:
        """Count a request start of ``action`` against the key's ``budget``; return the seconds to wait.

        0: counted, the request may start. More: nothing counted, that long until one fits the
        budget for the key as a whole. ``now`` is the limiter's clock.
        """


def _header_number(headers: Headers, name: str) -> float | None:
    value = headers.get(name)
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 and number == number else None


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
    """Why a request may not start yet.

    How long to wait, which budget is used up, whether to log it, and what sets that budget.
    """

    seconds: float
    budget: str
    announce: bool
    source: str = "connection extras rate_limits / rate_limit"


_PANEL_SAYS = "the panel's Retry-After / X-RateLimit-* headers"
_SHARED = "connection extras rate_limits and budget_redis: shared by every hook of the API key"


class RateLimiter:
    """The request budgets of one hook: a window per action and an optional overall cap.

    A request of an action without a budget (or any request, with no budgets at all) starts at once,
    subject only to the overall cap. Thread-safe; for coroutines use :meth:`await_turn` (it never
    blocks the event loop).

    The panel's word counts too (:meth:`after_reply`): a throttled action waits its ``Retry-After``,
    and a low ``X-RateLimit-Remaining`` spreads the remaining requests until ``X-RateLimit-Reset``;
    both only ever delay (``follow_panel=False`` ignores them, as releases before 0.3 did).

    :param budgets: action name → its :class:`Budget`.
    :param per_minute: overall cap for all actions together, evenly spaced (0: none).
    :param clock: where time comes from.
    :param shared: a budget shared by every hook of the same key (the per-action budgets hold for the
        key as a whole); None: each hook keeps its own.
    """

    def __init__(
        self,
        budgets: Mapping[str, Budget] | None = None,
        per_minute: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
        shared: SharedBudget | None = None,
    ):
        self.clock = clock
        self.shared = shared
        self.follow_panel = True
        self._holds: dict[str, float] = {}  # action → no request of it starts before this time
        self._windows = {action: Window(f"{action!r} ({budget})", budget) for action, budget in (budgets or {}).items()}
        # the overall cap keeps its meaning from before per-action budgets: starts evenly spaced
        self._overall = (
            Window(f"overall rate_limit ({per_minute:g}/min, evenly spaced)", Budget(1, 60.0 / per_minute))
            if per_minute > 0
            else None
        )
        self._lock = threading.Lock()
        self._announced_until = float("-inf")

    def try_start(self, action: str) -> Pause | None:
        """Count a request of ``action`` as started now, if every budget it counts against allows it.

        Returns None then; otherwise counts nothing and says how long to wait.
        """
        with self._lock:
            now = self.clock.monotonic()
            own = self._windows.get(action)
            windows = [window for window in (own, self._overall) if window is not None]
            waits = [Pause(window.wait(now), window.name, False) for window in windows]
            waits.append(Pause(self._holds.get(action, now) - now, f"{action!r}", False, _PANEL_SAYS))
            longest = max(waits, key=lambda pause: pause.seconds)
            if longest.seconds <= 0 and own is not None and self.shared is not None:
                longest = Pause(self.shared.acquire(action, own.budget, now), own.name, False, _SHARED)
            if longest.seconds <= 0:
                for window in windows:
                    window.record(now)
                return None
            announce = longest.seconds >= LOGGED_PAUSE and now >= self._announced_until
            if announce:
                self._announced_until = now + longest.seconds
            return longest._replace(announce=announce)

    def hold(self, action: str, seconds: float) -> None:
        """Start no request of ``action`` in the next ``seconds`` (a longer hold already set stays)."""
        with self._lock:
            until = self.clock.monotonic() + seconds
            self._holds[action] = max(self._holds.get(action, until), until)

    def after_reply(self, action: str, headers: Headers, error: BaseException | None, throttles: int) -> bool:
        """Learn from a reply of ``action``; return whether to send the request again.

        Only a request the panel turned away for its rate limit (:attr:`.MirPanelTransientError.throttled`:
        a 429 or a "too many requests" error, never processed — so even an ``add`` may go again) is
        sent again, after ``Retry-After`` (or else ``X-RateLimit-Reset``), at most
        :data:`THROTTLED_RESENDS` times (``throttles``: how often this request was throttled before);
        a throttle that names no wait, or one longer than :data:`MAX_THROTTLE_WAIT`, is left to the
        retry policy. Otherwise, when ``X-RateLimit-Remaining`` is 0 the action waits for
        ``X-RateLimit-Reset``, and when it is low the remaining requests are spread until then.
        """
        if not self.follow_panel:
            return False
        remaining = _header_number(headers, "X-RateLimit-Remaining")
        limit = _header_number(headers, "X-RateLimit-Limit")
        reset = _header_number(headers, "X-RateLimit-Reset")
        if reset is not None and reset > EPOCH_RESET:
            reset = max(0.0, reset - time.time())  # a Unix time: the one place the wall clock is read
        if isinstance(error, MirPanelTransientError) and error.throttled:
            wait = error.retry_after if error.retry_after is not None else reset
            if wait is None or wait > MAX_THROTTLE_WAIT:
                return False
            self.hold(action, wait)
            return throttles < THROTTLED_RESENDS
        if remaining is not None and reset is not None and reset > 0:
            low = max(2.0, (limit or 0.0) * LOW_REMAINING)
            if remaining <= 0:
                self.hold(action, reset)
            elif remaining <= low:
                self.hold(action, reset / (remaining + 1))
        return False

    def wait(self, action: str, log: Log | None = None) -> float:
        """Block until a request of ``action`` may start, and count it; return the seconds waited."""
        waited = 0.0
        while (pause := self.try_start(action)) is not None:
            _announce(pause, action, log)
            self.clock.sleep(pause.seconds)
            waited += pause.seconds
        return waited

    async def await_turn(self, action: str, log: Log | None = None) -> float:
        """Wait like :meth:`wait`, for coroutines: with the clock's ``asleep``, never blocking the loop.

        A shared budget is asked from a worker thread.
        """
        waited = 0.0
        while (
            pause := (
                self.try_start(action) if self.shared is None else await asyncio.to_thread(self.try_start, action)
            )
        ) is not None:
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
        log.info(
            "Request budget %s used up: the next %r request waits %.1f s (%s)",
            pause.budget,
            action,
            pause.seconds,
            pause.source,
        )
