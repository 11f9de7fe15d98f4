"""Balance histories for the spend-rate tests of the balance operator and trigger."""

from __future__ import annotations

HOUR = 3600.0


def spending_history(now: float, start: float, per_hour: float, hours: int) -> list[list[float]]:
    """Hourly readings ending an hour before ``now``, the balance falling by ``per_hour`` each hour."""
    return [[now - (hours - i) * HOUR, start - i * per_hour] for i in range(hours)]
