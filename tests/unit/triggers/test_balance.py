"""BalanceTrigger fires once per crossing (also across restarts) against the sandbox over real HTTP.

The spend rate and BalanceCheckOperator's projection are in ``unit/balance/test_spending.py``."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any, cast

import pytest
from support.airflow_compat import deserialize, serialize
from support.balance import HOUR, spending_history

from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.triggers.balance import BalanceTrigger
from airflow_provider_mirpanel.utils.fallback_stores import InProcessWatchStore


class Watch:
    """A BalanceTrigger running in this event loop; its events are collected as they fire."""

    def __init__(self, store: InProcessWatchStore, clock: Callable[[], float] | None = None, **kwargs: Any) -> None:
        self.trigger = BalanceTrigger(poll_interval=0.01, **kwargs)
        if clock is not None:
            self.trigger.clock = clock
        self.trigger.asset_state_store = store  # type: ignore[assignment]  # the triggerer injects the asset's store
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        async def collect() -> None:
            async for event in self.trigger.run():
                json.dumps(event.payload)
                self.events.append(event.payload)

        self.task = asyncio.ensure_future(collect())
        return self

    async def __aexit__(self, *exc: object) -> None:  # a triggerer stopping the trigger (restart, kill)
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture(autouse=True)
def fast_retries(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hook retries in milliseconds, so that fault tests stay fast."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(backoff=0.01, retries=1)))


async def polls(panel: SandboxPanel, count: int, limit: float = 20.0) -> None:
    """Wait until ``count`` more balance requests than now have reached the panel."""
    target = panel.count("balance") + count
    give_up = time.monotonic() + limit
    while panel.count("balance") < target:
        assert time.monotonic() < give_up, f"only {panel.count('balance')} balance requests"
        await asyncio.sleep(0.005)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_a_drop_below_the_threshold_fires_once_and_again_after_a_recovery_across_restarts(
    panel: SandboxPanel,
) -> None:
    store = InProcessWatchStore()
    fired: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with Watch(store, min_balance=500) as first:
            await polls(panel, 3)
            assert first.events == []  # the balance is fine: nothing fires
            panel.state.balance = 400.0
            await polls(panel, 5)
            fired.extend(first.events)
        async with Watch(store, min_balance=500) as restarted:  # a new triggerer takes the trigger over
            await polls(panel, 5)
            assert restarted.events == []  # the crossing was reported before the restart
            panel.state.balance = 600.0
            await polls(panel, 3)
            panel.state.balance = 300.0
            await polls(panel, 5)
            fired.extend(restarted.events)

    run(scenario)
    assert [event["status"] for event in fired] == ["low", "low"]
    assert [event["balance"] for event in fired] == [400.0, 300.0]
    assert fired[0]["message"].startswith("balance 400.00 USD is below the threshold 500.00 USD; spend rate ")
    assert fired[0]["min_balance"] == 500.0 and fired[0]["currency"] == "USD"
    assert len(json.dumps(fired[0])) < 600


def test_the_trigger_projects_the_run_out_from_a_synthetic_spend_history(panel: SandboxPanel) -> None:
    store = InProcessWatchStore()
    now = time.time()
    state_key = BalanceTrigger(runs_out_within_hours=48).state_key
    # 1,300 -> 1,025 over 11 h, then 1,000 an hour later (the sandbox's balance): 25 USD per hour.
    store.values[state_key] = {
        "low": False,
        "failing": False,
        "history": spending_history(now, start=1300.0, per_hour=25.0, hours=12),
    }

    async def scenario() -> None:
        async with Watch(store, runs_out_within_hours=48, clock=lambda: now) as watch:
            await polls(panel, 3)
            assert len(watch.events) == 1
            event = watch.events[0]
            assert event["status"] == "low" and event["spend_rate_per_hour"] == pytest.approx(25.0)
            assert event["hours_left"] == pytest.approx(40.0)
            runs_out_at = datetime.fromtimestamp(now + 40 * HOUR, timezone.utc).isoformat(timespec="seconds")
            assert event["runs_out_at"] == runs_out_at
            assert event["message"] == (
                "balance 1,000.00 USD runs out within 48 h (threshold runs out within 48 h); "
                f"spend rate 25.00 USD/h: it runs out in about 40.0 h (at {runs_out_at})"
            )

    run(scenario)


def test_transient_failures_fire_nothing_and_a_refused_key_fires_one_error(panel: SandboxPanel) -> None:
    store = InProcessWatchStore()
    panel.faults.add("balance", "http_status", status=503, times=6)

    async def outage() -> None:
        async with Watch(store, min_balance=500) as watch:
            await polls(panel, 10)  # three polls fail (503 twice each), then the panel answers again
            assert watch.events == []
            panel.state.balance = 100.0
            await polls(panel, 3)
            assert [event["status"] for event in watch.events] == ["low"]

    run(outage)
    panel.faults.add("balance", "error", error=f"Invalid API key {panel.api_key}", times=None)

    async def refused() -> None:
        async with Watch(InProcessWatchStore(), min_balance=500) as watch:
            await polls(panel, 6)
            assert [event["status"] for event in watch.events] == ["error"]  # once, not at every poll
            assert panel.api_key not in json.dumps(watch.events)
            assert watch.events[0]["message"].startswith("the balance cannot be read: ")

    run(refused)


def test_the_trigger_serializes_to_json_and_back() -> None:
    trigger = BalanceTrigger(mirpanel_conn_id="panel", min_balance=50, runs_out_within_hours=24, poll_interval=600)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_mirpanel.triggers.balance.BalanceTrigger"
    assert kwargs == {
        "mirpanel_conn_id": "panel",
        "min_balance": 50.0,
        "runs_out_within_hours": 24.0,
        "poll_interval": 600.0,
    }
    rebuilt = BalanceTrigger(**cast(dict[str, Any], deserialize(serialize(kwargs))))
    assert rebuilt.serialize() == (classpath, kwargs) and rebuilt.state_key == trigger.state_key


def test_a_watch_stored_before_the_layout_move_resumes_and_fires(panel: SandboxPanel) -> None:
    """An ``AssetWatcher``'s trigger row as 0.2.0 (the flat layout, before issue 21) stored it resumes."""
    classpath = "airflow_provider_mirpanel.triggers.balance.BalanceTrigger"
    kwargs = {
        "mirpanel_conn_id": "mirpanel_default",
        "min_balance": 5000.0,
        "runs_out_within_hours": None,
        "poll_interval": 0.01,
    }
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**cast(dict[str, Any], deserialize(serialize(kwargs))))
    assert trigger.serialize() == (classpath, kwargs)

    trigger.asset_state_store = InProcessWatchStore()  # the triggerer injects the asset's store

    async def first_event() -> dict[str, Any]:
        event = await anext(trigger.run())
        return cast(dict[str, Any], event.payload)

    assert asyncio.run(first_event())["status"] == "low"  # the sandbox's balance of 1000 is below 5000
