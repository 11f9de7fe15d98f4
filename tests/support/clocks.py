"""A fake clock for request budgets: time passes only when a limiter waits (or a test moves it)."""

from __future__ import annotations


class FakeClock:
    """Time that passes only when the limiter waits; every wait is recorded, none takes real time.

    Call it (``clock()``) for the time as a plain function: a sandbox's ``limits_clock``, so that the
    panel's windows and the hook's budgets run on the same fake time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.waits: list[float] = []
        self.async_waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.async_waits.append(seconds)
        self.now += seconds
