"""Load: 100,000 orders tracked through their lifecycle, 2,000 orders placed concurrently.

Against the sandbox panel over real HTTP. The sandbox clock is frozen and moved by hand, so every
poll sees a known state: the 100,000 orders are all pending at the first pass, half have ended at
the second, all at the third. A full pass is 1,000 requests of 100 IDs; later passes ask only
about the orders still pending. The sandbox's own state is the reference for every record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue
from support.task_context import task_context

from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator
from airflow_provider_mirpanel.protocol import ORDER_TERMINAL_STATUSES
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor
from airflow_provider_mirpanel.triggers.mirpanel import OrderStatusTrigger
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore

pytestmark = pytest.mark.slow

N = 100_000
PASS_REQUESTS = [1000, 1000, 500]  # all pending; all still pending when asked; the half left


@pytest.fixture
def lifecycle(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SandboxPanel, list[int]]]:
    """100,000 orders on a frozen clock: half end at sandbox t=70 s, half at t=260 s (IDs interleaved)."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(concurrency=8)))
    panel.speed = 0
    service = panel.catalogue.first_of_type("Default")["service"]
    quick = panel.create_orders(N // 2, service=service, quantity=100)  # 60 s pending + 10 s delivery
    slow = panel.create_orders(N // 2, service=service, quantity=2000)  # 60 s pending + 200 s delivery
    ids = [order for pair in zip(quick, slow, strict=True) for order in pair]
    panel.requests.clear()
    yield panel, ids


def between_passes(panel: SandboxPanel, number: int) -> None:
    """Move the clock after pass ``number``: the quick half ends, then the slow half."""
    panel.advance({1: 100.0, 2: 200.0}.get(number, 0.0))


def status_requests(panel: SandboxPanel) -> list[list[int]]:
    return [entry.ids for entry in list(panel.requests) if entry.action == "status"]


def check_pass(asked: list[list[int]], pending: list[int]) -> None:
    """One pass asked about exactly the pending IDs, each once, at most 100 per request."""
    assert max(len(chunk) for chunk in asked) == 100
    flat = [order for chunk in asked for order in chunk]
    assert len(flat) == len(pending) and set(flat) == set(pending)


def check_against_panel(panel: SandboxPanel, records: Sequence[Mapping[str, Any]], ids: list[int]) -> None:
    """Every order accounted for, each record as the panel holds the order."""
    assert [record["order"] for record in records] == ids
    for record in records:
        order = panel.state.orders[record["order"]]
        assert record["error"] is None and record["status"] == order.status
        assert record["remains"] == order.remains and record["charge"] == pytest.approx(order.charge, abs=1e-5)
    statuses = Counter(record["status"] for record in records)
    assert set(statuses) <= ORDER_TERMINAL_STATUSES and statuses["Partial"] == N // 5  # every 5th ends Partial


def test_100000_orders_tracked_with_get_orders_status_take_1000_requests_a_pass(
    lifecycle: tuple[SandboxPanel, list[int]],
) -> None:
    panel, ids = lifecycle
    hook = MirPanelHook()
    final: dict[int, Mapping[str, Any]] = {}
    pending = ids
    per_pass = []
    while pending:
        before = len(status_requests(panel))
        records = hook.get_orders_status(pending)
        asked = status_requests(panel)[before:]
        check_pass(asked, pending)
        per_pass.append(len(asked))
        assert [record["order"] for record in records] == pending
        final.update((record["order"], record) for record in records if record["status"] in ORDER_TERMINAL_STATUSES)
        pending = [order for order in pending if order not in final]
        between_passes(panel, len(per_pass))
    assert per_pass == PASS_REQUESTS
    check_against_panel(panel, [final[order] for order in ids], ids)


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_100000_orders_waited_for_by_the_sensor_ask_only_about_pending_ones(
    lifecycle: tuple[SandboxPanel, list[int]], mode: str
) -> None:
    """Each poke is the sensor's poll; in reschedule mode every poke is a new sensor instance."""
    panel, ids = lifecycle
    store = InProcessStateStore()  # task_state_store: the finished records survive between pokes
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, mode=mode, poke_interval=60, timeout=3600)
    per_poke = []
    result: PokeReturnValue | None = None
    for number in range(1, 4):
        if mode == "reschedule":
            sensor = OrderStatusSensor(task_id="wait", order_ids=ids, mode=mode, poke_interval=60, timeout=3600)
        before = len(status_requests(panel))
        result = sensor.poke(task_context(store))
        per_poke.append(len(status_requests(panel)) - before)
        assert result.is_done == (number == 3)
        between_passes(panel, number)
    assert per_poke == PASS_REQUESTS
    assert result is not None
    check_against_panel(panel, result.xcom_value or [], ids)
    assert max(len(json.dumps(value)) for value in store.values.values()) < 64 * 1024, "small state-store values"


def test_100000_orders_waited_for_by_the_trigger_ask_only_about_pending_ones(
    lifecycle: tuple[SandboxPanel, list[int]],
) -> None:
    panel, ids = lifecycle
    trigger = OrderStatusTrigger(ids, poll_interval=0.3, deadline=time.time() + 300)

    async def steer() -> None:
        for number, total in enumerate((1000, 2000), start=1):
            while len(status_requests(panel)) < total:
                await asyncio.sleep(0.005)
            between_passes(panel, number)

    async def wait() -> dict[str, Any]:
        task = asyncio.ensure_future(anext(trigger.run()))
        await steer()
        return (await task).payload

    event = asyncio.run(wait())
    assert event["status"] == "success"
    asked = status_requests(panel)
    assert len(asked) == sum(PASS_REQUESTS)
    check_pass(asked[:1000], ids)
    check_pass(asked[1000:2000], ids)
    check_pass(asked[2000:], [order for order in ids if panel.state.orders[order].quantity == 2000])
    assert event["ended"] == len(ids) and len(json.dumps(event)) < 64 * 1024, "the event does not grow with N"


def test_2000_orders_placed_concurrently_are_all_accounted_for_and_charges_add_up(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(concurrency=16)))
    panel.speed = 0
    service = panel.catalogue.first_of_type("Default")
    orders = [
        {"service": service["service"], "link": f"https://example.com/load/{i}", "quantity": service["min"] + i % 50}
        for i in range(2000)
    ]
    opening = panel.balance
    store = InProcessStateStore()

    place = PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=16)
    records = place.execute(task_context(store))

    assert [record["state"] for record in records] == ["placed"] * 2000
    assert panel.count("add") == 2000 and len(panel.state.orders) == 2000
    by_link = {order.link: order for order in list(panel.state.orders.values())}
    assert len(by_link) == 2000, "no link placed twice"
    assert [record["order"] for record in records] == [by_link[order["link"]].id for order in orders]
    assert [record["quantity"] for record in records] == [by_link[order["link"]].quantity for order in orders]

    hook = MirPanelHook()
    ids = [record["order"] for record in records]
    charged = sum(record["charge"] or 0.0 for record in hook.get_orders_status(ids))
    assert opening - hook.get_balance()["balance"] == pytest.approx(charged, abs=1e-6)
    assert sum(record["cost"] for record in records) == pytest.approx(charged, rel=1e-3), "estimates match charges"

    panel.advance(3600)  # every order ends; Partial ones are refunded their undelivered part
    statuses = hook.get_orders_status(ids)
    assert Counter(record["status"] for record in statuses) == {"Completed": 1600, "Partial": 400}
    refunded_charges = sum(record["charge"] or 0.0 for record in statuses)
    assert refunded_charges < charged
    assert opening - hook.get_balance()["balance"] == pytest.approx(refunded_charges, abs=1e-6)

    panel.requests.clear()  # a retry of the same task sends nothing
    again = PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=16).execute(task_context(store))
    assert [record["order"] for record in again] == ids
    assert panel.count("add") == 0 and len(panel.state.orders) == 2000
