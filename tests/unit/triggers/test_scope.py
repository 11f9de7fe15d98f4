"""Issue 20: the trigger a placement defers to while another task holds its ledger scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support.leases import KEY, OWNER_A, OWNER_B

from airflow_provider_mirpanel.placement import lease as lease_module
from airflow_provider_mirpanel.placement.lease import Lease
from airflow_provider_mirpanel.triggers.scope import LedgerScopeTrigger


def trigger_events(trigger: LedgerScopeTrigger, reads: Callable[[], Any]) -> list[dict[str, Any]]:
    """Run the trigger to its event, its reads of the lease answered by ``reads`` (the triggerer's comms
    are Airflow's own; the lease's store is what the test controls)."""
    import asyncio

    async def read() -> Any:
        return reads()

    trigger._read = read  # type: ignore[method-assign]

    async def first() -> list[dict[str, Any]]:
        async for event in trigger.run():
            return [event.payload]
        return []

    return asyncio.run(first())


def test_the_scope_trigger_fires_once_the_lease_is_released() -> None:
    now = lease_module.SystemLeaseClock().time()
    held = Lease(OWNER_B, "theirs", now, now, now + 60).as_json()
    answers = [held, held, {**held, "expires": 0.0, "released_at": now}]
    trigger = LedgerScopeTrigger("ledger", KEY, OWNER_A.as_json(), poll_interval=0.01)

    assert trigger_events(trigger, lambda: answers.pop(0)) == [{"free": True}]
    assert answers == [], "it read the lease until it was free"


def test_the_scope_trigger_gives_up_at_the_tasks_timeout_so_the_task_names_the_holder() -> None:
    now = lease_module.SystemLeaseClock().time()
    held = Lease(OWNER_B, "theirs", now, now, now + 600).as_json()
    trigger = LedgerScopeTrigger("ledger", KEY, OWNER_A.as_json(), poll_interval=0.01, give_up_at=now - 1)

    assert trigger_events(trigger, lambda: held) == [{"free": False}]


def test_the_scope_trigger_hands_a_failed_read_to_the_tasks_own_claim() -> None:
    def broken() -> Any:
        raise RuntimeError("api-server unreachable")

    trigger = LedgerScopeTrigger("ledger", KEY, OWNER_A.as_json(), poll_interval=0.01)
    [event] = trigger_events(trigger, broken)
    assert event["free"] is None and "api-server unreachable" in event["error"]
