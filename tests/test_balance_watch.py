"""Balance alerts that see it coming: the spend rate, BalanceCheckOperator's projection, and
BalanceTrigger firing once per crossing (also across restarts) against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any, cast

import pytest
from airflow_compat import deserialize, serialize
from task_context import task_context

from airflow_provider_mirpanel.assets.events import balance_asset
from airflow_provider_mirpanel.balance.spending import BalanceHistory, spend_rate
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.operators.mirpanel import HISTORY_KEY, BalanceCheckOperator
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.triggers.balance import BalanceTrigger, MemoryWatchStore
from airflow_provider_mirpanel.utils.state_stores import MemoryAssetStores
from airflow_provider_mirpanel.version_compat import AirflowFailException

HOUR = 3600.0


@pytest.fixture(autouse=True)
def fast_retries(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hook retries in milliseconds, so that fault tests stay fast."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(backoff=0.01, retries=1)))


def spending_history(now: float, start: float, per_hour: float, hours: int) -> list[list[float]]:
    """Hourly readings ending an hour before ``now``, the balance falling by ``per_hour`` each hour."""
    return [[now - (hours - i) * HOUR, start - i * per_hour] for i in range(hours)]


# -- the spend rate --------------------------------------------------------------------------------


def test_spend_rate_counts_drops_per_hour_and_leaves_top_ups_out() -> None:
    readings = [(0.0, 100.0), (HOUR, 90.0), (2 * HOUR, 190.0), (3 * HOUR, 170.0)]  # a top-up of 100 in between
    assert spend_rate(readings) == pytest.approx(10.0)  # 10 + 20 spent over 3 h
    assert spend_rate(readings[:1]) is None


def test_the_history_stays_small_and_recent() -> None:
    history = BalanceHistory()
    for minute in range(0, 48 * 60, 5):  # two days of readings every 5 minutes
        history = history.with_reading(minute * 60.0, 1000.0 - minute)
    assert len(history.samples) <= 48
    assert history.samples[0][0] >= history.samples[-1][0] - 24 * HOUR
    assert len(json.dumps(history.to_json())) < 1500


# -- BalanceCheckOperator --------------------------------------------------------------------------


def test_the_operator_projects_the_run_out_from_the_history_in_the_asset_state_store(panel: SandboxPanel) -> None:
    stores = MemoryAssetStores()
    store = stores[balance_asset("mirpanel_default")]
    store.set(HISTORY_KEY, spending_history(time.time(), start=1100.0, per_hour=10.0, hours=10))
    operator = BalanceCheckOperator(task_id="balance", min_balance=100, runs_out_within_hours=120)

    with pytest.raises(AirflowFailException) as low:
        operator.execute(task_context(asset_state_store=stores))

    # 1,100 -> 1,010 over 9 h, then 1,000 an hour later: 10 USD per hour, 100 hours left.
    message = str(low.value)
    assert message.startswith("balance 1,000.00 USD runs out within 120 h (threshold minimum 100.00 USD or "
                              "runs out within 120 h); spend rate 10.00 USD/h: it runs out in about 100.0 h (at 20")
    assert panel.count("balance") == 1
    assert len(store.get(HISTORY_KEY)) == 11  # this reading joined the history


def test_a_slow_spend_passes_and_says_when_it_would_run_out(panel: SandboxPanel,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    stores = MemoryAssetStores()
    stores[balance_asset("mirpanel_default")].set(HISTORY_KEY, [[time.time() - 10 * HOUR, 1001.0]])
    record = BalanceCheckOperator(task_id="balance", min_balance=100, runs_out_within_hours=24).execute(
        task_context(asset_state_store=stores))
    assert record["balance"] == 1000.0
    out = capsys.readouterr().out
    assert "balance 1,000.00 USD is fine" in out and "it runs out in about 10,000.0 h" in out


def test_bad_thresholds_are_refused_before_any_request(panel: SandboxPanel) -> None:
    with pytest.raises(MirPanelInputError, match="runs_out_within_hours must be a non-negative number"):
        BalanceCheckOperator(task_id="balance", runs_out_within_hours="soon").execute({})
    with pytest.raises(MirPanelInputError, match="min_balance"):
        BalanceTrigger(min_balance=-1)
    with pytest.raises(MirPanelInputError, match="needs min_balance, runs_out_within_hours or both"):
        BalanceTrigger()
    assert panel.count() == 0


# -- BalanceTrigger --------------------------------------------------------------------------------


class Watch:
    """A BalanceTrigger running in this event loop; its events are collected as they fire."""

    def __init__(self, store: MemoryWatchStore, clock: Callable[[], float] | None = None, **kwargs: Any) -> None:
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
    store = MemoryWatchStore()
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
    store = MemoryWatchStore()
    now = time.time()
    state_key = BalanceTrigger(runs_out_within_hours=48).state_key
    # 1,300 -> 1,025 over 11 h, then 1,000 an hour later (the sandbox's balance): 25 USD per hour.
    store.values[state_key] = {"low": False, "failing": False,
                               "history": spending_history(now, start=1300.0, per_hour=25.0, hours=12)}

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
                f"spend rate 25.00 USD/h: it runs out in about 40.0 h (at {runs_out_at})")

    run(scenario)


def test_transient_failures_fire_nothing_and_a_refused_key_fires_one_error(panel: SandboxPanel) -> None:
    store = MemoryWatchStore()
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
        async with Watch(MemoryWatchStore(), min_balance=500) as watch:
            await polls(panel, 6)
            assert [event["status"] for event in watch.events] == ["error"]  # once, not at every poll
            assert panel.api_key not in json.dumps(watch.events)
            assert watch.events[0]["message"].startswith("the balance cannot be read: ")

    run(refused)


def test_the_trigger_serializes_to_json_and_back() -> None:
    trigger = BalanceTrigger(mirpanel_conn_id="panel", min_balance=50, runs_out_within_hours=24, poll_interval=600)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_mirpanel.triggers.balance.BalanceTrigger"
    assert kwargs == {"mirpanel_conn_id": "panel", "min_balance": 50.0, "runs_out_within_hours": 24.0,
                      "poll_interval": 600.0}
    rebuilt = BalanceTrigger(**cast(dict[str, Any], deserialize(serialize(kwargs))))
    assert rebuilt.serialize() == (classpath, kwargs) and rebuilt.state_key == trigger.state_key
