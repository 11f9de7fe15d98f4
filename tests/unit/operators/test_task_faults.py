"""Task-level faults: the worker dies in the middle of placing orders, the panel goes down in a wait.

A task's retries share its ``task_state_store`` (a :class:`InProcessStateStore` here, one per task,
kept across tries); each try is a new operator instance, as Airflow makes it. The sandbox panel is
the judge: nothing is placed twice, and every order it holds is in the task's result.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from support.steering import wait_for
from support.task_context import task_context

from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator
from airflow_provider_mirpanel.placement.run import OrdersNotPlacedError, OrdersUnresolvedError
from airflow_provider_mirpanel.protocol import AddOrderRecord
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore
from airflow_provider_mirpanel.version_compat import AirflowSensorTimeout, TaskDeferred

QUICK = {"timeout": 1.0, "connect_timeout": 0.5, "retries": 2, "backoff": 0.02}


@pytest.fixture
def quick(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> SandboxPanel:
    """The sandbox connection with short timeouts and quick retries."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**QUICK)))
    return panel


def campaign(panel: SandboxPanel, n: int) -> list[dict[str, Any]]:
    service = panel.catalogue.first_of_type("Default")
    return [
        {"service": service["service"], "link": f"https://example.com/campaign/{i}", "quantity": service["min"]}
        for i in range(n)
    ]


class Worker:
    """One try of the task on a worker that dies after ``survive`` successful adds.

    ``die`` is the exception the death raises (``SystemExit``: the process is killed;
    ``KeyboardInterrupt``: SIGINT) and ``when`` whether it strikes after the panel got the add
    (``"after_send"``: the order exists, its ID never reached the ledger) or before (``"before_send"``).
    Once dead, the worker neither sends nor writes anything more: every other placement thread
    dies at its next add or state-store write.
    """

    def __init__(
        self,
        op: PlaceOrderOperator,
        survive: int | None,
        die: type[BaseException] = SystemExit,
        when: str = "after_send",
    ):
        self.real = op.hook.add_order
        self.survive = survive
        self.die = die
        self.when = when
        self.succeeded = 0
        self.dead = False
        self._lock = threading.Lock()
        op.hook.add_order = self.add_order  # type: ignore[method-assign]

    def state_store(self, store: InProcessStateStore) -> Any:
        """The task's state store as this worker sees it: writes fail once it is dead."""
        worker = self

        class DyingStore:
            def get(self, key: str, default: Any = None) -> Any:
                return store.get(key, default)

            def set(self, key: str, value: Any) -> None:
                if worker.dead:
                    raise worker.die("worker died")
                store.set(key, value)

        return DyingStore()

    def add_order(self, service: Any, **params: Any) -> AddOrderRecord:
        with self._lock:
            if self.dead:
                raise self.die("worker died")
            last = self.survive is not None and self.succeeded == self.survive
            if last:
                self.dead = True
            else:
                self.succeeded += 1
        if last and self.when == "before_send":
            raise self.die("worker died before sending")
        placed = self.real(service, **params)
        if last or self.dead:  # the death struck while this add was on the wire
            raise self.die("worker died after sending")
        return placed


def run_try(
    panel: SandboxPanel, orders: list[dict[str, Any]], store: InProcessStateStore, survive: int | None, **kwargs: Any
) -> tuple[list[dict[str, Any]] | None, BaseException | None]:
    """One try: (records, None) when it returned, (records or None, error) when it failed or died."""
    die = kwargs.pop("die", SystemExit)
    when = kwargs.pop("when", "after_send")
    op = PlaceOrderOperator(task_id="place", orders=orders, **kwargs)
    worker = Worker(op, survive, die, when)
    try:
        return op.execute({"task_state_store": worker.state_store(store)}), None
    except OrdersNotPlacedError as error:
        return error.records, error
    except (SystemExit, KeyboardInterrupt) as death:
        return None, death


def panel_links(panel: SandboxPanel) -> Counter[str]:
    return Counter(order.link or "" for order in list(panel.state.orders.values()))


def check_consistent(panel: SandboxPanel, records: list[dict[str, Any]], orders: list[dict[str, Any]]) -> None:
    """Nothing twice; every placed record is a panel order; every panel order is in the result."""
    links = panel_links(panel)
    assert max(links.values()) == 1, f"placed twice: {[link for link, n in links.items() if n > 1]}"
    assert [record["link"] for record in records] == [order["link"] for order in orders]
    by_link = {order.link: order.id for order in list(panel.state.orders.values())}
    for record in records:
        if record["state"] == "placed":
            assert by_link.get(record["link"]) == record["order"], record
        else:
            assert record["state"] in ("unknown", "skipped") and record["order"] is None, record
    accounted = {record["link"] for record in records if record["state"] in ("placed", "unknown", "skipped")}
    assert set(links) <= accounted, f"panel orders missing from the result: {set(links) - accounted}"


#: The ledger writes the ``sending`` marks of this many orders at once in these tests (the default is 50).
WINDOW = 5


def unknown_links(records: list[dict[str, Any]]) -> set[str]:
    return {record["link"] for record in records if record["state"] in ("unknown", "skipped")}


@pytest.mark.parametrize("die", [SystemExit, KeyboardInterrupt])
def test_a_50_order_run_whose_worker_dies_three_times_places_nothing_twice(
    quick: SandboxPanel, die: type[BaseException]
) -> None:
    panel = quick
    orders = campaign(panel, 50)
    store = InProcessStateStore()  # task_state_store: shared by the task's tries

    deaths = [("after_send", 10), ("before_send", 10), ("after_send", 10)]
    for number, (when, survive) in enumerate(deaths, start=1):
        records, error = run_try(
            panel, orders, store, survive, max_concurrency=1, die=die, when=when, ledger_window=WINDOW
        )
        assert records is None and isinstance(error, die), f"try {number} died"
        links = panel_links(panel)
        assert max(links.values()) == 1, f"try {number} placed an order twice"
        assert panel.count("add") == len(panel.state.orders), "every add that reached the panel placed one order"
    # 10 placed + 1 sent at each death after sending; the 'before_send' death sent nothing
    assert len(panel.state.orders) == 10 + 1 + 10 + 10 + 1

    records, error = run_try(panel, orders, store, None, max_concurrency=1, ledger_window=WINDOW)  # try 4 survives
    assert isinstance(error, OrdersUnresolvedError) and records is not None
    check_consistent(panel, records, orders)
    states = Counter(record["state"] for record in records)
    assert states["placed"] + states["unknown"] == 50
    # Each death leaves at most two windows marked and unanswered: the one in flight and the next.
    assert states["unknown"] <= len(deaths) * 2 * WINDOW
    sent_unanswered = set(panel_links(panel)) - {r["link"] for r in records if r["state"] == "placed"}
    assert sent_unanswered <= unknown_links(records), "sent, but the ledger never heard back: unknown, not resent"
    assert "orders may exist on the panel: look for them in the panel's order list" in str(error)
    assert isinstance(error, OrdersUnresolvedError), "a retry could not settle them: no retries"

    # The operator checks the panel's order list, then accepts the unknown ones: nothing is sent.
    before = panel.count("add")
    records, error = run_try(panel, orders, store, None, max_concurrency=1, on_unknown="skip", ledger_window=WINDOW)
    assert error is None and records is not None
    assert Counter(record["state"] for record in records) == {"placed": states["placed"], "skipped": states["unknown"]}
    assert panel.count("add") == before
    check_consistent(panel, records, orders)


def test_concurrent_placement_dying_repeatedly_never_duplicates_and_loses_no_order(quick: SandboxPanel) -> None:
    panel = quick
    orders = campaign(panel, 50)
    store = InProcessStateStore()
    records: list[dict[str, Any]] | None = None
    for tries, survive in enumerate((7, 5, 12, 3, None), start=1):
        records, error = run_try(panel, orders, store, survive, max_concurrency=8, ledger_window=WINDOW)
        if survive is not None:
            assert isinstance(error, SystemExit)
            links = panel_links(panel)
            assert not links or max(links.values()) == 1, f"try {tries} placed an order twice"
    assert records is not None
    check_consistent(panel, records, orders)
    placed = [record for record in records if record["state"] == "placed"]
    unknown = [record for record in records if record["state"] == "unknown"]
    assert len(placed) + len(unknown) == 50
    assert len(placed) <= len(panel.state.orders) <= 50
    assert panel.count("add") == len(panel.state.orders), "every add that reached the panel placed one order"


class CountingStore(InProcessStateStore):
    """A task_state_store that counts the trips a real one makes to the api-server."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = self.sets = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.gets += 1
        return super().get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.sets += 1
        super().set(key, value)


class SlowStore(CountingStore):
    """A task_state_store whose every trip takes 20 ms, as one through the supervisor and the api-server does."""

    def get(self, key: str, default: Any = None) -> Any:
        time.sleep(0.02)
        return super().get(key, default)

    def set(self, key: str, value: Any) -> None:
        time.sleep(0.02)
        super().set(key, value)


def test_the_ledger_marks_as_many_orders_per_write_as_the_panel_takes_meanwhile(quick: SandboxPanel) -> None:
    """With a store as slow as the real one, windows grow: far fewer writes than orders, not three per order."""
    panel = quick
    orders = campaign(panel, 1000)
    store = SlowStore()

    records, error = run_try(panel, orders, store, None, max_concurrency=8)

    assert error is None and records is not None and panel.count("add") == 1000
    pages = len(store.values)
    assert store.gets == 1 and store.sets == pages, "one lookup; pages of marks and pages of outcomes"
    assert store.sets < 1000, "fewer writes than orders (the first release made three trips per order)"
    assert max(len(json.dumps(value)) for value in store.values.values()) < 64 * 1024
    store.gets = store.sets = 0
    panel.requests.clear()

    records, error = run_try(panel, orders, store, None)  # a retry: every order known, nothing sent or written

    assert error is None and [r["state"] for r in records or []] == ["placed"] * 1000
    assert (store.gets, store.sets, panel.count("add")) == (pages + 1, 0, 0)


def test_orders_are_marked_only_when_a_worker_can_send_them(quick: SandboxPanel) -> None:
    """12 orders, 8 workers, replies held back: only the 8 on the wire are marked; a death then leaves those
    8 unknown and the 4 others unmarked, so the retry sends them: one order per row, none lost."""
    panel = quick
    orders = campaign(panel, 12)
    store = InProcessStateStore()
    op = PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=8)
    real = op.hook.add_order
    all_at_panel = threading.Event()

    def held(service: Any, **params: Any) -> AddOrderRecord:
        placed = real(service, **params)
        if len(panel.state.orders) == 8:
            all_at_panel.set()
        all_at_panel.wait(60)
        return placed

    class DiesOnceAllAreSent(InProcessStateStore):
        """The task's store, until the process dies: the moment the 8 adds have reached the panel."""

        def set(self, key: str, value: Any) -> None:
            if all_at_panel.is_set():
                raise SystemExit("killed")
            store.set(key, value)

    op.hook.add_order = held  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        op.execute(task_context(DiesOnceAllAreSent()))
    assert len(panel.state.orders) == 8
    assert [len(page) for page in store.values.values()] == [8], "one window: the 8 orders on the wire"

    records, error = run_try(panel, orders, store, None, on_unknown="skip")

    assert error is None and records is not None
    assert Counter(record["state"] for record in records) == {"skipped": 8, "placed": 4}
    assert max(panel_links(panel).values()) == 1 and len(panel.state.orders) == 12
    check_consistent(panel, records, orders)


def test_a_bug_in_the_placement_loop_is_recorded_as_unknown_and_not_resent(
    quick: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RuntimeError after the add reached the panel (not a death): the try records it as unknown."""
    panel = quick
    orders = campaign(panel, 5)
    store = InProcessStateStore()
    op = PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=1)
    real = op.hook.add_order
    calls = []

    def buggy(service: Any, **params: Any) -> AddOrderRecord:
        calls.append(params["link"])
        placed = real(service, **params)
        if len(calls) == 3:
            raise RuntimeError("bug after the add returned")
        return placed

    op.hook.add_order = buggy  # type: ignore[method-assign]
    with pytest.raises(OrdersNotPlacedError) as failed:
        op.execute(task_context(store))
    assert [record["state"] for record in failed.value.records] == ["placed", "placed", "unknown", "placed", "placed"]
    assert "RuntimeError: bug after the add returned" in failed.value.records[2]["error"]

    records, error = run_try(panel, orders, store, None)  # the retry
    assert isinstance(error, OrdersNotPlacedError) and records is not None
    assert panel.count("add") == 5 and len(panel.state.orders) == 5
    check_consistent(panel, records, orders)


# -- the panel goes down during an OrderStatusSensor wait -------------------------------------------------------------


def outage_mid_wait(panel: SandboxPanel, seconds: float) -> threading.Thread:
    """In the background: once the wait has polled (two requests: 150 IDs), take the panel down for
    ``seconds``; once a poll has come through after the outage, end every order."""

    def go() -> None:
        wait_for(lambda: panel.count("status") >= 2)
        panel.down(seconds=seconds)
        before = panel.count("status")  # a refused connection is never logged: only polls after the outage count
        wait_for(lambda: panel.count("status") > before)
        panel.complete_all()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def pending_orders(panel: SandboxPanel, n: int) -> list[int]:
    """Orders that stay Pending (the clock stands still) until the test ends them."""
    panel.speed = 0
    return panel.create_orders(n)


def test_poke_mode_wait_survives_an_outage_longer_than_the_hooks_retries(quick: SandboxPanel) -> None:
    panel = quick
    ids = pending_orders(panel, 150)
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=0.1, timeout=30, mode="poke")
    thread = outage_mid_wait(panel, seconds=1.0)  # the hook gives up after ~0.1 s of retries
    started = time.monotonic()
    records = sensor.execute(task_context())
    thread.join()
    assert time.monotonic() - started >= 1.0
    assert [record["order"] for record in records] == ids
    assert {record["status"] for record in records} == {"Completed"}
    assert all(record["error"] is None for record in records)


def test_deferrable_wait_survives_an_outage(quick: SandboxPanel) -> None:
    panel = quick
    ids = pending_orders(panel, 150)
    store = InProcessStateStore()
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=0.1, timeout=30, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(store))
    trigger = deferred.value.trigger
    thread = outage_mid_wait(panel, seconds=1.0)  # the triggerer's polls meet a panel refusing connections
    started = time.monotonic()
    event = asyncio.run(first_event(trigger))
    thread.join()
    assert time.monotonic() - started >= 1.0
    assert event.payload["status"] == "success", event.payload
    records = getattr(sensor, deferred.value.method_name)(task_context(store), event.payload)
    assert [record["order"] for record in records] == ids
    assert {record["status"] for record in records} == {"Completed"}


async def first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


def test_a_wait_that_outlasts_the_sensor_timeout_during_an_outage_times_out_cleanly(quick: SandboxPanel) -> None:
    panel = quick
    ids = pending_orders(panel, 10)
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=0.1, timeout=0.8, mode="poke")
    started = time.monotonic()
    with panel.outage(), pytest.raises(AirflowSensorTimeout):
        sensor.execute(task_context())
    assert time.monotonic() - started >= 0.8, "it waited out its timeout through the outage"
    assert panel.count("status") == 0


def test_a_refused_key_still_ends_a_poke_mode_wait_at_once(
    quick: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel = quick
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({**panel.connection(**QUICK), "password": "wrong"}))
    sensor = OrderStatusSensor(task_id="wait", order_ids=[1], poke_interval=0.1, timeout=30, mode="poke")
    with pytest.raises(MirPanelError, match="Invalid API key"):
        sensor.execute(task_context())
    assert panel.count("status") == 1
