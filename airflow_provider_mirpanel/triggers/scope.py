"""The trigger a placement waits on while another task holds its ledger scope.

It reads the scope's lease (:mod:`~airflow_provider_mirpanel.placement.lease`) from the ledger asset's state
store every ``poll_interval`` seconds, in the triggerer, and fires once the lease no longer keeps
the waiting task out (released, expired, or the task's own). The task then resumes and claims the
scope itself: the trigger only says when to look, so a read that fails fires after one interval
instead, and the claim decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_mirpanel.placement.lease import Lease, LeaseOwner
from airflow_provider_mirpanel.triggers import classpath_of


@dataclass(repr=False, eq=False)  # BaseTrigger's repr (from serialize()) and identity
class LedgerScopeTrigger(BaseTrigger):
    """Fire when a ledger scope's lease stops keeping ``owner`` out.

    :param asset_name: the ledger asset's name (its state store holds the lease).
    :param lease_key: the lease's key in that store.
    :param owner: the waiting task (``LeaseOwner.as_json()``).
    :param poll_interval: seconds between reads of the lease.
    :param skew: the clocks' allowance of the lease, in seconds.
    :param give_up_at: when the task stops waiting (epoch seconds): the trigger fires then, so that the
        task fails naming the holder.
    :param try_number: the waiting task's try.
    """

    asset_name: str
    lease_key: str
    owner: dict[str, Any]
    poll_interval: float
    skew: float = 5.0
    give_up_at: float | None = None
    try_number: int = 1

    def __post_init__(self) -> None:
        super().__init__()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the JSON keyword arguments that rebuild this trigger: its fields."""
        return classpath_of(self), asdict(self)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read the lease until it is free for the waiting task, then yield one event."""
        owner = LeaseOwner.from_json(self.owner)
        # The task deferred because the scope was held: look after one interval, not at once. A trigger that
        # fires before the scheduler has processed the deferral fails the task on Airflow 3.3.2
        # (apache/airflow#67287), and the holder rarely lets go within milliseconds anyway.
        await asyncio.sleep(self._delay(time.time()))
        while True:
            try:
                lease = Lease.from_json(await self._read())
            except Exception as error:  # the task's claim decides; look again after one interval
                self.log.warning(
                    "Could not read the lease %r (%s): the task looks itself in %g s",
                    self.lease_key,
                    error,
                    self.poll_interval,
                )
                await asyncio.sleep(self.poll_interval)
                yield TriggerEvent({"free": None, "error": f"{type(error).__name__}: {error}"})
                return
            now = time.time()
            if owner is None or lease is None or not lease.keeps_out(owner, self.try_number, now, self.skew):
                yield TriggerEvent({"free": True})
                return
            if self.give_up_at is not None and now >= self.give_up_at:
                yield TriggerEvent({"free": False})
                return
            await asyncio.sleep(self._delay(now))

    def _delay(self, now: float) -> float:
        """Return how long to sleep before the next look: one interval, or until the task gives up."""
        delay = self.poll_interval if self.give_up_at is None else min(self.poll_interval, self.give_up_at - now)
        return max(0.0, delay)

    async def _read(self) -> Any:
        from airflow.sdk.execution_time.context import AssetStateStoreAccessor

        return await AssetStateStoreAccessor(name=self.asset_name).aget(self.lease_key)
