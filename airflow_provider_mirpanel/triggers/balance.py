"""An event trigger that watches the panel balance and fires once when it crosses below a threshold.

Run it from an ``AssetWatcher``: the triggerer polls ``balance`` every ``poll_interval`` seconds and
the asset gets an event only when the balance *becomes* low — below ``min_balance``, or running
out within ``runs_out_within_hours`` at the current spend rate (see
:mod:`airflow_provider_mirpanel.balance.spending`). While it stays low nothing more fires; once it has
recovered, the next crossing fires again. A DAG scheduled on the asset sends the alert::

    from airflow.sdk import DAG, Asset, AssetWatcher
    from airflow_provider_mirpanel.triggers.balance import BalanceTrigger

    balance_low = Asset("mirpanel_balance_low", watchers=[AssetWatcher(
        name="mirpanel_balance_watch", trigger=BalanceTrigger(min_balance=50, runs_out_within_hours=24))])

    with DAG("mirpanel_balance_watch", schedule=[balance_low], ...):
        ...  # triggering_asset_events[balance_low][-1].extra["payload"]["message"]

Whether it is low right now and the balance history (at most 48 readings over 24 h) live in the
watched asset's state store, so a restarted triggerer neither fires again for a crossing it already
reported nor forgets the spend rate. The state is written after the event is handed to the
triggerer: a triggerer killed in between repeats that one alert rather than losing it.

Each event's payload (the asset event's ``extra["payload"]``) is small:

- ``"low"``: ``message`` (balance, threshold, spend rate, projected run-out), ``balance``,
  ``currency``, ``min_balance``, ``runs_out_within_hours``, ``spend_rate_per_hour``, ``hours_left``,
  ``runs_out_at``, ``checked_at``;
- ``"error"``: ``message`` — the balance cannot be read for a reason retrying does not fix (a
  refused key, a malformed reply); fired once, until a reading succeeds again.

Transient failures (timeouts, 5xx, 429, HTML pages, outages) fire nothing: the hook retries them,
and a poll that still fails is logged and tried again at the next interval. No event or log line
holds the API key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_mirpanel.balance.spending import BalanceHistory, assess, threshold
from airflow_provider_mirpanel.exceptions import MirPanelError, MirPanelInputError, MirPanelTransientError
from airflow_provider_mirpanel.triggers import DEFAULT_CONN_ID, async_hook_class, classpath_of
from airflow_provider_mirpanel.utils.fallback_stores import InProcessWatchStore
from airflow_provider_mirpanel.utils.state_stores import digest

if TYPE_CHECKING:  # imported in run(), off the event loop: aiohttp alone is ~0.1 s
    from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook

Payload = dict[str, Any]


@dataclass
class WatchState:
    """What the watch remembers between polls and across restarts."""

    low: bool = False
    failing: bool = False
    history: BalanceHistory = field(default_factory=BalanceHistory)

    @classmethod
    def from_json(cls, value: Any) -> WatchState:
        """Read the state as stored; anything else reads as a fresh state."""
        if not isinstance(value, dict):
            return cls()
        return cls(bool(value.get("low")), bool(value.get("failing")), BalanceHistory.from_json(value.get("history")))

    def to_json(self) -> dict[str, Any]:
        """Return the state as stored (JSON)."""
        return {"low": self.low, "failing": self.failing, "history": self.history.to_json()}


#: The former name of :class:`~airflow_provider_mirpanel.utils.fallback_stores.InProcessWatchStore`.
MemoryWatchStore = InProcessWatchStore


class BalanceTrigger(BaseEventTrigger):
    """Watch the balance from an ``AssetWatcher``; fire once each time it becomes low.

    .. seealso::
        ``docs/reference.md``, "BalanceTrigger": what it does, returns and raises;
        how to use it: ``docs/alerts-and-assets.md``.

    :param mirpanel_conn_id: the ``mirpanel`` connection (read by the triggerer).
    :param min_balance: fire when the balance is below this (in the panel's currency).
    :param runs_out_within_hours: fire when, at the spend rate of the last 24 h, the balance runs
        out within this many hours. At least one of the two thresholds is needed.
    :param poll_interval: seconds between two ``balance`` requests (default 300).
    """

    def __init__(
        self,
        mirpanel_conn_id: str = DEFAULT_CONN_ID,
        min_balance: float | None = None,
        runs_out_within_hours: float | None = None,
        poll_interval: float = 300.0,
    ) -> None:
        super().__init__()
        self.mirpanel_conn_id = mirpanel_conn_id
        self.min_balance = threshold("min_balance", min_balance)
        self.runs_out_within_hours = threshold("runs_out_within_hours", runs_out_within_hours)
        if self.min_balance is None and self.runs_out_within_hours is None:
            raise MirPanelInputError("BalanceTrigger needs min_balance, runs_out_within_hours or both")
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise MirPanelInputError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        self.poll_interval = float(poll_interval)
        self.clock: Callable[[], float] = time.time  # replaced in tests and demos
        self._fallback = InProcessWatchStore()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the JSON keyword arguments that rebuild this trigger."""
        return (
            classpath_of(self),
            {
                "mirpanel_conn_id": self.mirpanel_conn_id,
                "min_balance": self.min_balance,
                "runs_out_within_hours": self.runs_out_within_hours,
                "poll_interval": self.poll_interval,
            },
        )

    @property
    def state_key(self) -> str:
        """The asset state store key of this watch: one per connection and thresholds (not interval)."""
        return f"mirpanel_balance_watch.{digest([self.mirpanel_conn_id, self.min_balance, self.runs_out_within_hours])}"

    def __repr__(self) -> str:
        return (
            f"BalanceTrigger(mirpanel_conn_id={self.mirpanel_conn_id!r}, min_balance={self.min_balance}, "
            f"runs_out_within_hours={self.runs_out_within_hours}, poll_interval={self.poll_interval})"
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll forever; yield an event at each crossing into low (or into a lasting error)."""
        state = await self._load()
        hook = (await asyncio.to_thread(async_hook_class))(self.mirpanel_conn_id)
        async with hook:
            while True:
                before = state.to_json()
                payload = await self._check(hook, state)
                if payload is not None:
                    yield TriggerEvent(payload)
                if state.to_json() != before:
                    await self._save(state)
                await asyncio.sleep(self.poll_interval)

    async def _check(self, hook: MirPanelAsyncHook, state: WatchState) -> Payload | None:
        """One poll: update ``state``; the payload of an event to fire, or None."""
        try:
            record = await hook.get_balance()
        except MirPanelError as error:
            return self._failed(hook.redact(str(error)), isinstance(error, MirPanelTransientError), state)
        state.failing = False
        now = self.clock()
        projection = assess(state.history, record, now, self.min_balance, self.runs_out_within_hours)
        state.history = state.history.with_reading(now, projection.balance)
        message = projection.message()
        if projection.low and not state.low:
            state.low = True
            self.log.warning("Balance alert: %s", message)
            return {"status": "low", "message": message, **projection.payload()}
        if state.low and not projection.low:
            self.log.info("The balance has recovered (%s); the next drop alerts again", message)
        else:
            self.log.info(
                "%s%s; next poll in %.3g s", message, " (alerted already)" if state.low else "", self.poll_interval
            )
        state.low = projection.low
        return None

    def _failed(self, reason: str, transient: bool, state: WatchState) -> Payload | None:
        if transient:
            self.log.warning("balance poll failed (%s); asking again in %.3g s", reason, self.poll_interval)
            return None
        message = f"the balance cannot be read: {reason}"
        if state.failing:
            self.log.error("%s (alerted already); asking again in %.3g s", message, self.poll_interval)
            return None
        state.failing = True
        self.log.error("Balance watch alert: %s", message)
        return {"status": "error", "message": message}

    def _store(self) -> Any:
        """Return the watched asset's state store, or the in-process fallback (outside a triggerer)."""
        return self._fallback if self.asset_state_store is None else self.asset_state_store

    async def _load(self) -> WatchState:
        try:
            return WatchState.from_json(await self._store().aget(self.state_key))
        except ValueError:  # watched by several assets: which one's store is ambiguous
            self.log.warning("watched by several assets: the alert state is kept in memory only")
            self.asset_state_store = None
            return WatchState()

    async def _save(self, state: WatchState) -> None:
        await self._store().aset(self.state_key, state.to_json())
