"""OrderStatusTrigger and RefillStatusTrigger: ``run()`` against the sandbox panel over real HTTP."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from airflow.triggers.base import BaseTrigger
from support.airflow_compat import deserialize, serialize

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.triggers.mirpanel import OrderStatusTrigger, RefillStatusTrigger

POLL = 0.05
FAST_RETRIES = {"backoff": 0.01, "retries": 2}
TERMINAL = {"Completed", "Partial", "Canceled", "Refunded"}


@pytest.fixture(autouse=True)
def fast_retries(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hook retries in milliseconds, so that fault tests stay fast."""
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(**FAST_RETRIES)))


def events_of(trigger: BaseTrigger) -> list[dict[str, Any]]:
    """Every event the trigger yields (a trigger must yield exactly one)."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def event_of(trigger: BaseTrigger) -> dict[str, Any]:
    events = events_of(trigger)
    assert len(events) == 1
    json.dumps(events[0])  # JSON through and through
    return events[0]


def ended(event: dict[str, Any], count: int) -> str:
    """The message of a success event for ``count`` IDs; the event holds no records, whatever the count."""
    assert event["status"] == "success", event
    assert set(event) == {"status", "message", "ended", "deadline"} and event["ended"] == count
    assert len(json.dumps(event)) < 1024
    return str(event["message"])


def run_with(trigger: BaseTrigger, steer: Callable[[], Any]) -> dict[str, Any]:
    """Run the trigger while ``steer`` (a coroutine function) changes the panel under it."""

    async def both() -> dict[str, Any]:
        task = asyncio.ensure_future(anext(trigger.run()))
        await steer()
        return (await task).payload

    return asyncio.run(both())


async def until_requests(panel: SandboxPanel, count: int, action: str = "status", limit: float = 10.0) -> None:
    """Wait until the panel has received ``count`` requests of ``action``."""
    give_up = time.monotonic() + limit
    while panel.count(action) < count:
        assert time.monotonic() < give_up, f"only {panel.count(action)} {action} requests"
        await asyncio.sleep(0.005)


def polls(panel: SandboxPanel) -> list[list[int]]:
    return [entry.ids for entry in panel.requests if entry.action == "status"]


# -- success ---------------------------------------------------------------------------------------


def test_orders_that_end_over_a_few_polls_end_the_wait_with_a_small_event(
    panel: SandboxPanel,
) -> None:
    panel.speed = 0
    ids = panel.create_orders(30)
    wanted = list(reversed(ids))

    async def steer() -> None:
        await until_requests(panel, 1)
        for order in ids[:10]:
            panel.set_order(order, "Completed")
        await until_requests(panel, 2)
        panel.set_order(ids[10], "Partial")
        for order in ids[11:20]:
            panel.set_order(order, "Completed")
        await until_requests(panel, 3)
        panel.complete_all()

    event = run_with(OrderStatusTrigger(wanted, poll_interval=0.2, deadline=time.time() + 30), steer)

    assert ended(event, 30).startswith("30/30 orders done; 0 remaining units; statuses: Completed 29, Partial 1")
    # Each poll sees the changes made after the previous one, and asks only about what it left pending.
    assert [sorted(batch) for batch in polls(panel)] == [ids, ids, ids[10:], ids[20:]]


def test_the_second_poll_asks_only_for_orders_not_yet_ended(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(1000)
    for order in ids[::2]:  # half end before the first poll, spread over all of its ten batches
        panel.set_order(order, "Completed")

    async def steer() -> None:
        await until_requests(panel, 15)
        panel.complete_all()

    event = run_with(OrderStatusTrigger(ids, poll_interval=0.2), steer)

    ended(event, 1000)
    asked = polls(panel)
    assert [len(batch) for batch in asked[:10]] == [100] * 10
    second = asked[10:15]
    assert [len(batch) for batch in second] == [100] * 5  # 5 requests, not 10
    assert sorted(order for batch in second for order in batch) == ids[1::2]
    assert len(asked) == 20  # the third poll asked about the same 500 once more, and they had ended


def test_a_mix_of_terminal_statuses_in_any_spelling_ends_the_wait(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(4)
    for order, status in zip(ids, ["completed", "Partial", "cancelled", "Refunded"], strict=True):
        panel.set_order(order, status)

    event = event_of(OrderStatusTrigger(ids, poll_interval=POLL))

    assert ended(event, 4) == (
        "4/4 orders done; 0 remaining units; statuses: Completed 1, Partial 1, Canceled 1, Refunded 1"
    )


def test_custom_terminal_statuses_end_the_wait_early(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(3, status="In progress")

    event = event_of(OrderStatusTrigger(ids, poll_interval=POLL, terminal_statuses=["in progress"]))

    assert ended(event, 3).endswith("statuses: In progress 3")
    assert panel.count("status") == 1


# -- failure ---------------------------------------------------------------------------------------


def test_a_failed_status_ends_the_wait_naming_the_orders_concerned(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(6)
    for order in ids[:3]:
        panel.set_order(order, "Completed")
    panel.set_order(ids[3], "Canceled")
    panel.set_order(ids[5], "Refunded")

    event = event_of(OrderStatusTrigger(ids, poll_interval=POLL, failed_statuses=["cancelled", "refunded"]))

    assert event["status"] == "failed"
    assert event["ids"] == [ids[3], ids[5]]
    assert "Canceled/Refunded" in event["message"] and str(ids[3]) in event["message"]
    assert set(event) == {"status", "message", "count", "ids"} and event["count"] == 2


def test_unknown_order_ids_fail_the_wait_and_are_named(panel: SandboxPanel) -> None:
    ids = panel.create_orders(2)

    event = event_of(OrderStatusTrigger([ids[0], 5, ids[1], 6], poll_interval=POLL))

    assert event["status"] == "failed"
    assert event["ids"] == [5, 6]
    assert "Incorrect order ID" in event["message"] and event["count"] == 2
    assert panel.count("status") == 1


def test_a_bad_key_ends_the_wait_with_an_error_event_that_never_holds_the_key(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "my-secret-key-1234567890"
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps({**panel.connection(), "password": key}))

    event = event_of(OrderStatusTrigger([1, 2], poll_interval=POLL))

    assert event["status"] == "error" and "Invalid API key" in event["message"]
    assert key not in json.dumps(event) and panel.api_key not in json.dumps(event)
    assert panel.count() == 1


def test_a_key_echoed_by_the_panel_is_blanked_out_of_the_event(panel: SandboxPanel) -> None:
    panel.faults.add("status", "error", error=f"Key {panel.api_key} is blocked")

    event = event_of(OrderStatusTrigger([1], poll_interval=POLL))

    assert event["status"] == "error" and "is blocked" in event["message"]
    assert panel.api_key not in json.dumps(event)


def test_a_malformed_reply_ends_the_wait_with_an_error_event(panel: SandboxPanel) -> None:
    ids = panel.create_orders(2)
    panel.faults.add("status", "body", body=b'["not", "an", "object"] <!-- debug -->')

    event = event_of(OrderStatusTrigger(ids, poll_interval=POLL))

    assert event["status"] == "error" and "Malformed reply" in event["message"]
    assert set(event) == {"status", "message"}


def test_a_bad_connection_ends_the_wait_with_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        CONN_ENV_VAR, json.dumps({"conn_type": "mirpanel", "host": "http://panel.example/api/v2", "password": "k"})
    )

    event = event_of(OrderStatusTrigger([1], poll_interval=POLL))

    assert event["status"] == "error" and "unencrypted" in event["message"]


# -- transient failures never end the wait ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("http_status", {"status": 503}),  # a gateway's {"error": "Service Unavailable"}
        ("http_status", {"status": 500, "body": "Internal Server Error"}),
        ("rate_limit", {"retry_after": 0}),
        ("html", {"status": 522}),
        ("html", {"status": 200}),  # a challenge page
        ("drop", {}),
    ],
)
def test_transient_failures_during_the_wait_do_not_end_it(
    panel: SandboxPanel, kind: str, options: dict[str, Any]
) -> None:
    panel.speed = 0
    ids = panel.create_orders(150)
    # Five failures in a row: more than the hook's two retries, so one whole poll fails too.
    fault = panel.faults.add("status", kind, skip=2, times=5, **options)

    async def steer() -> None:
        await until_requests(panel, 2 + 5 + 1)
        panel.complete_all()

    event = run_with(OrderStatusTrigger(ids, poll_interval=POLL, deadline=time.time() + 30), steer)

    assert ended(event, 150).endswith("statuses: Completed 150")
    assert fault.applied == 5


#: A log line of the triggers: ``<time> [<level>] <message> [airflow_provider_mirpanel.triggers.…] loc=…``.
TRIGGER_LINE = re.compile(r"^\S+ \[\w+\s*\] (?P<message>.*) \[airflow_provider_mirpanel\.triggers\.[\w.]+\]")


def trigger_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The messages the triggers logged."""
    return [match["message"] for line in capsys.readouterr().out.splitlines() if (match := TRIGGER_LINE.match(line))]


def test_a_failed_poll_is_logged_as_failed_not_as_progress(
    panel: SandboxPanel, capsys: pytest.CaptureFixture[str]
) -> None:
    panel.speed = 0
    ids = panel.create_orders(20, quantity=100)
    panel.set_order(ids[0], "Completed")
    # The second poll fails: three 503s in a row outlast the hook's two retries.
    panel.faults.add("status", "http_status", status=503, skip=1, times=3)

    async def steer() -> None:
        await until_requests(panel, 1 + 3 + 1)  # a good poll, the failed one, a good one again
        panel.complete_all()

    event = run_with(OrderStatusTrigger(ids, poll_interval=POLL, deadline=time.time() + 30), steer)

    assert event["status"] == "success"
    lines = trigger_lines(capsys)
    assert lines[0] == "1/20 orders done; 1,900 remaining units; statuses: Pending 19, Completed 1; next poll in 0.05 s"
    failed = [line for line in lines if line.startswith("poll failed")]
    assert len(failed) == 1
    assert re.fullmatch(
        r"poll failed \(.*503.*\); 19 of 20 orders still pending, asking again in 0\.05 s", failed[0]
    ), failed[0]
    assert not [line for line in lines if re.search(r"\b0/20|statuses: ;|statuses: $", line)]


def test_a_wait_whose_every_poll_fails_says_so_and_times_out_naming_the_cause(
    panel: SandboxPanel, capsys: pytest.CaptureFixture[str]
) -> None:
    panel.speed = 0
    ids = panel.create_orders(20)
    panel.faults.add("status", "http_status", status=503, times=None)

    event = event_of(OrderStatusTrigger(ids, poll_interval=POLL, deadline=time.time() + 0.5))

    lines = trigger_lines(capsys)
    assert lines and all(
        re.fullmatch(
            r"poll failed \(.*503.*\); 20 orders still pending, asking again in "
            r"[0-9.e-]+ s",
            line,
        )
        for line in lines[:-1]
    ), lines
    assert event["status"] == "timeout" and event["ids"] == ids
    assert re.fullmatch(
        r"20 of 20 orders had not ended by the deadline \(0/20 orders done; statuses: "
        r"not seen yet 20\); the last poll failed \(.*503.*\)",
        event["message"],
    ), event["message"]
    assert lines[-1] == event["message"]


def test_an_outage_with_refused_connections_is_waited_out(panel: SandboxPanel) -> None:
    ids = panel.create_orders(10)
    panel.down(seconds=0.5)

    event = event_of(OrderStatusTrigger(ids, poll_interval=POLL, deadline=time.time() + 30))

    assert ended(event, 10).startswith("10/10 orders done")


# -- timeout ---------------------------------------------------------------------------------------


def test_the_deadline_ends_the_wait_with_a_timeout_event_naming_the_pending_orders(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(5)
    panel.set_order(ids[0], "Completed")

    started = time.monotonic()
    event = event_of(OrderStatusTrigger(ids, poll_interval=0.1, deadline=time.time() + 0.35))

    assert event["status"] == "timeout"
    assert event["ids"] == ids[1:]
    assert "4 of 5 orders" in event["message"]
    # Not before the deadline; how many polls fit before it depends on the machine's speed, not the trigger.
    assert time.monotonic() - started >= 0.3
    assert polls(panel)[0] == ids and all(batch == ids[1:] for batch in polls(panel)[1:])


def test_a_panel_that_never_answers_times_out_at_the_deadline(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(timeout=0.2, retries=100)))
    panel.faults.add("status", "html", times=None)

    started = time.monotonic()
    event = event_of(OrderStatusTrigger([1, 2], poll_interval=POLL, deadline=time.time() + 0.5))

    assert event == {"status": "timeout", "message": event["message"], "count": 2, "ids": [1, 2]}
    # The retries were cut at the deadline (plus one request timeout): 100 retries with backoff would take hours.
    assert time.monotonic() - started < 30


# -- refills ---------------------------------------------------------------------------------------


def refills_of(panel: SandboxPanel, count: int) -> list[int]:
    orders = panel.create_orders(count, status="Completed")
    return [panel.state.create_refill(panel.state.orders[order]).id for order in orders]


def test_refills_that_end_over_a_few_polls_include_rejected_ones(panel: SandboxPanel) -> None:
    panel.speed = 0  # the refills wait for the first poll, then end
    refills = refills_of(panel, 8)  # every 4th refill is rejected

    async def end_after_first_poll() -> None:
        await until_requests(panel, 1, "refill_status")
        panel.advance(3600)

    event = run_with(RefillStatusTrigger(refills, poll_interval=POLL, deadline=time.time() + 30), end_after_first_poll)

    assert ended(event, 8).endswith("statuses: Completed 6, Rejected 2")
    assert panel.count("refill_status") >= 2


def test_a_rejected_refill_fails_the_wait_when_asked_to(panel: SandboxPanel) -> None:
    refills = refills_of(panel, 4)

    event = event_of(RefillStatusTrigger(refills, poll_interval=POLL, failed_statuses=["Rejected"]))

    assert event["status"] == "failed" and event["ids"] == [refills[3]]


def test_unknown_refills_fail_the_wait(panel: SandboxPanel) -> None:
    event = event_of(RefillStatusTrigger([41, 42], poll_interval=POLL))
    assert event["status"] == "failed" and event["ids"] == [41, 42] and "Refill not found" in event["message"]


def test_refills_time_out_too(panel: SandboxPanel) -> None:
    panel.speed = 0
    refills = refills_of(panel, 2)
    event = event_of(RefillStatusTrigger(refills, poll_interval=POLL, deadline=time.time() + 0.1))
    assert event["status"] == "timeout" and event["ids"] == refills


# -- serialization ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "ids_argument"), [(OrderStatusTrigger, "order_ids"), (RefillStatusTrigger, "refill_ids")]
)
def test_serialize_round_trips_through_json_and_airflow_serde(cls: type, ids_argument: str) -> None:
    trigger = cls(
        ["3", 1, 2, 1],
        mirpanel_conn_id="panel_eu",
        poll_interval=15,
        terminal_statuses=["completed", "partial"],
        failed_statuses={"cancelled"},
        deadline=1_900_000_000.5,
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == f"airflow_provider_mirpanel.triggers.mirpanel.{cls.__name__}"
    assert kwargs == {
        ids_argument: [3, 1, 2],
        "mirpanel_conn_id": "panel_eu",
        "poll_interval": 15.0,
        "terminal_statuses": ["Completed", "Partial"],
        "failed_statuses": ["Canceled"],
        "deadline": 1_900_000_000.5,
    }
    restored = json.loads(json.dumps(deserialize(serialize(kwargs))))
    assert cls(**restored).serialize() == (classpath, kwargs)


def test_defaults_serialize_as_none(panel: SandboxPanel) -> None:
    _, kwargs = OrderStatusTrigger([1]).serialize()
    assert kwargs == {
        "order_ids": [1],
        "mirpanel_conn_id": "mirpanel_default",
        "poll_interval": 60.0,
        "terminal_statuses": None,
        "failed_statuses": None,
        "deadline": None,
    }
    assert OrderStatusTrigger(**kwargs).serialize()[1] == kwargs


def test_invalid_arguments_are_refused_when_the_trigger_is_built() -> None:
    with pytest.raises(MirPanelInputError):
        OrderStatusTrigger(["abc"])
    with pytest.raises(MirPanelInputError):
        OrderStatusTrigger([1], poll_interval=-1)


def test_repr_is_short(panel: SandboxPanel) -> None:
    assert repr(OrderStatusTrigger(range(1, 5001), poll_interval=30)) == (
        "OrderStatusTrigger(5000 orders, mirpanel_conn_id='mirpanel_default', poll_interval=30.0)"
    )


@pytest.mark.parametrize(
    "module", ["airflow_provider_mirpanel.triggers.mirpanel", "airflow_provider_mirpanel.triggers.balance"]
)
def test_the_trigger_module_leaves_the_async_hook_and_aiohttp_to_run(module: str) -> None:
    """The triggerer imports trigger modules on its event loop: ours do not import aiohttp with them."""
    import importlib
    import subprocess
    import sys

    from airflow_provider_mirpanel.hooks.mirpanel_async import MirPanelAsyncHook

    code = (
        f"import sys, airflow.triggers.base; before = set(sys.modules); import {module}; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'aiohttp' "
        "or m == 'airflow_provider_mirpanel.hooks.mirpanel_async'))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert imported.stdout.strip() == "[]"
    assert MirPanelAsyncHook.default_conn_name == importlib.import_module(module).DEFAULT_CONN_ID


# -- stored triggers resume across the package's layout move --------------------------------------

#: Trigger rows as version 0.2.0 (the flat layout, before issue 21 moved modules into folders) left
#: them in the metadata DB: ``serialize()``'s class path and keyword arguments, through Airflow's serde.
STORED_BY_0_2_0 = {
    "airflow_provider_mirpanel.triggers.mirpanel.OrderStatusTrigger": "order_ids",
    "airflow_provider_mirpanel.triggers.mirpanel.RefillStatusTrigger": "refill_ids",
}


def trigger_of_row(classpath: str, kwargs: dict[str, Any]) -> BaseTrigger:
    """What the triggerer does with a stored row: import the class path, rebuild from the kwargs."""
    module, _, name = classpath.rpartition(".")
    trigger_class = getattr(importlib.import_module(module), name)
    trigger = trigger_class(**cast(dict[str, Any], deserialize(json.loads(json.dumps(serialize(kwargs))))))
    assert isinstance(trigger, BaseTrigger)
    return trigger


@pytest.mark.parametrize(("classpath", "ids_argument"), STORED_BY_0_2_0.items())
def test_a_trigger_stored_before_the_layout_move_resumes_and_ends_the_wait(
    panel: SandboxPanel, classpath: str, ids_argument: str
) -> None:
    ids = refills_of(panel, 3) if ids_argument == "refill_ids" else panel.create_orders(3, status="Completed")
    kwargs = {
        ids_argument: ids,
        "mirpanel_conn_id": "mirpanel_default",
        "poll_interval": POLL,
        "terminal_statuses": None,
        "failed_statuses": None,
        "deadline": time.time() + 30,
    }
    panel.advance(3600)  # the refills end too

    trigger = trigger_of_row(classpath, kwargs)

    assert trigger.serialize() == (classpath, {**kwargs, "poll_interval": POLL})  # the same row again
    assert event_of(trigger)["status"] == "success"
