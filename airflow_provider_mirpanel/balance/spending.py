"""Balance history, spend rate and run-out projection: when the money runs out, seen in advance.

Both :class:`~airflow_provider_mirpanel.operators.mirpanel.BalanceCheckOperator` and
:class:`~airflow_provider_mirpanel.triggers.balance.BalanceTrigger` keep a small history of balance
readings in an asset state store and judge each new reading with :func:`assess`. Nothing here talks
to the panel or to Airflow.

The **spend rate** is what the balance lost per hour over the history: the sum of every drop between
two consecutive readings, divided by the hours they span. Top-ups (rises) are left out, so a top-up
does not read as negative spending. The **run-out time** is the balance divided by that rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import pairwise
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.protocol import to_float

#: Readings kept (about 1 KB of JSON): enough for a rate, small enough for one state-store value.
MAX_SAMPLES = 48
#: Hours of history the spend rate is computed over.
HISTORY_HOURS = 24.0

Sample = tuple[float, float]  # (epoch seconds, balance)


@dataclass(frozen=True)
class BalanceHistory:
    """Balance readings, oldest first, thinned to at most ``MAX_SAMPLES`` over ``HISTORY_HOURS``."""

    samples: tuple[Sample, ...] = ()

    @classmethod
    def from_json(cls, value: Any) -> BalanceHistory:
        """Return the history stored as ``[[epoch, balance], ...]``; anything else reads as empty."""
        samples: list[Sample] = []
        for item in value if isinstance(value, list) else []:
            if isinstance(item, list) and len(item) == 2 and all(isinstance(x, (int, float)) for x in item):
                samples.append((float(item[0]), float(item[1])))
        return cls(tuple(sorted(samples)))

    def to_json(self) -> list[Any]:
        """Return the history as stored: ``[[epoch, balance], ...]``."""
        return [[at, balance] for at, balance in self.samples]

    def with_reading(self, at: float, balance: float) -> BalanceHistory:
        """Return this history plus a reading: old ones dropped, the new one kept only if spaced from the last.

        Readings closer than ``HISTORY_HOURS / MAX_SAMPLES`` to the last kept one replace nothing and
        are not kept (the judgement still uses them, through :meth:`including`).
        """
        recent = [sample for sample in self.samples if sample[0] >= at - HISTORY_HOURS * 3600 and sample[0] < at]
        if recent and at - recent[-1][0] < HISTORY_HOURS * 3600 / MAX_SAMPLES:
            return BalanceHistory(tuple(recent))
        return BalanceHistory(tuple([*recent, (at, balance)][-MAX_SAMPLES:]))

    def including(self, at: float, balance: float) -> list[Sample]:
        """Return the kept readings of the last ``HISTORY_HOURS`` and the current one."""
        return [*(s for s in self.samples if at - HISTORY_HOURS * 3600 <= s[0] < at), (at, balance)]


def spend_rate(samples: Sequence[Sample]) -> float | None:
    """Currency spent per hour over ``samples`` (drops only); None with fewer than two readings in time."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    spent = sum(max(0.0, before[1] - after[1]) for before, after in pairwise(samples))
    return spent / ((samples[-1][0] - samples[0][0]) / 3600)


@dataclass(frozen=True)
class Projection:
    """A balance reading judged against the thresholds.

    ``hours_left`` is None when nothing was spent (or there is no rate yet): it does not run out.
    """

    balance: float
    currency: str
    checked_at: float
    min_balance: float | None
    runs_out_within_hours: float | None
    rate: float | None

    @property
    def hours_left(self) -> float | None:
        """Hours until the balance runs out at the spend rate; None without a rate."""
        return None if not self.rate else max(self.balance, 0.0) / self.rate

    @property
    def runs_out_at(self) -> str | None:
        """When the balance runs out at the spend rate (UTC, ISO-8601); None without a rate."""
        hours = self.hours_left
        return None if hours is None else _iso(self.checked_at + hours * 3600)

    @property
    def below_minimum(self) -> bool:
        """Whether the balance is below ``min_balance``."""
        return self.min_balance is not None and self.balance < self.min_balance

    @property
    def runs_out_soon(self) -> bool:
        """Whether the balance runs out within ``runs_out_within_hours``."""
        hours = self.hours_left
        return self.runs_out_within_hours is not None and hours is not None and hours <= self.runs_out_within_hours

    @property
    def low(self) -> bool:
        """Whether this reading calls for an alert."""
        return self.below_minimum or self.runs_out_soon

    def message(self) -> str:
        """``balance 12.50 USD is below the threshold 50.00 USD; spending 3.10 USD/h, it runs out in …``."""
        return f"{self._verdict()}; {self._outlook()}"

    def payload(self) -> dict[str, Any]:
        """Return the judgement as a small JSON dict (trigger events, asset event extras)."""
        return {
            "balance": self.balance,
            "currency": self.currency,
            "min_balance": self.min_balance,
            "runs_out_within_hours": self.runs_out_within_hours,
            "spend_rate_per_hour": None if self.rate is None else round(self.rate, 6),
            "hours_left": None if self.hours_left is None else round(self.hours_left, 3),
            "runs_out_at": self.runs_out_at,
            "checked_at": _iso(self.checked_at),
        }

    def _money(self, value: float) -> str:
        return f"{value:,.2f}{' ' + self.currency if self.currency else ''}"

    def _verdict(self) -> str:
        balance = f"balance {self._money(self.balance)}"
        if self.below_minimum:
            assert self.min_balance is not None
            return f"{balance} is below the threshold {self._money(self.min_balance)}"
        if self.runs_out_soon:
            return f"{balance} runs out within {self.runs_out_within_hours:g} h (threshold {self._threshold()})"
        if self.min_balance is None and self.runs_out_within_hours is None:
            return balance
        return f"{balance} is fine (threshold {self._threshold()})"

    def _threshold(self) -> str:
        parts = [] if self.min_balance is None else [f"minimum {self._money(self.min_balance)}"]
        if self.runs_out_within_hours is not None:
            parts.append(f"runs out within {self.runs_out_within_hours:g} h")
        return " or ".join(parts) or "none"

    def _outlook(self) -> str:
        if self.rate is None:
            return "spend rate unknown (no earlier reading yet), so no run-out time"
        if not self.rate:
            return f"spend rate 0 per hour over the last {HISTORY_HOURS:g} h: it does not run out at this rate"
        return (
            f"spend rate {self._money(self.rate)}/h: it runs out in about {self.hours_left:,.1f} h "
            f"(at {self.runs_out_at})"
        )


def assess(
    history: BalanceHistory,
    record: Mapping[str, Any],
    at: float,
    min_balance: float | None,
    runs_out_within_hours: float | None,
) -> Projection:
    """Judge one balance record (``balance``, ``currency``) read at ``at`` against the thresholds."""
    balance = float(record["balance"])
    return Projection(
        balance,
        str(record.get("currency") or ""),
        at,
        min_balance,
        runs_out_within_hours,
        spend_rate(history.including(at, balance)),
    )


def threshold(name: str, value: Any) -> float | None:
    """Return a threshold parameter as a non-negative number (text is read too); None when not given."""
    if value in (None, ""):
        return None
    number = to_float(value)
    if number is None or number < 0:
        raise MirPanelInputError(f"{name} must be a non-negative number, got {value!r}")
    return number


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
