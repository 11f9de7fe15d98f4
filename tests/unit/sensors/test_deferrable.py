"""Deferrable OrderStatusSensor / RefillStatusSensor: one check on the worker, the rest in a trigger.

Unit tests catch ``TaskDeferred``, run the trigger's ``run()`` against the sandbox to its event and
resume the sensor the way the task runner does (``resume_execution``). The last test runs a real
``airflow dags test`` in a subprocess, where Airflow runs the trigger inline.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Context
from support.airflow_cli import airflow_home, run_airflow
from support.steering import once
from support.task_context import task_context

from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.sensors.mirpanel import DEFER_GRACE_SECONDS, OrderStatusSensor, RefillStatusSensor
from airflow_provider_mirpanel.triggers.mirpanel import OrderStatusTrigger, RefillStatusTrigger
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore
from airflow_provider_mirpanel.version_compat import (
    STATE_STORES,
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

Sensor = OrderStatusSensor | RefillStatusSensor


@pytest.fixture(autouse=True)
def fast_retries(panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(backoff=0.01, retries=1)))


def orders_sensor(**kwargs: Any) -> OrderStatusSensor:
    return OrderStatusSensor(task_id="wait", deferrable=True, poke_interval=0.05, **kwargs)


def deferral(sensor: Sensor, context: Context) -> TaskDeferred:
    """The TaskDeferred the sensor's execute raises."""
    with pytest.raises(TaskDeferred) as caught:
        sensor.execute(context)
    return caught.value


def trigger_event(deferred: TaskDeferred) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        return (await anext(deferred.trigger.run())).payload

    return asyncio.run(first())


def resume(sensor: Sensor, context: Context, deferred: TaskDeferred, event: dict[str, Any] | None) -> Any:
    """What the task runner does when the trigger fired: call ``next_method`` with the event."""
    return sensor.resume_execution(deferred.method_name, {"event": event}, context)


def without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in record.items() if key != "checked_at"} for record in records]


def status_polls(panel: SandboxPanel) -> list[list[int]]:
    return [entry.ids for entry in panel.requests if entry.action == "status"]


# -- the same records as poke mode -----------------------------------------------------------------


def test_deferred_wait_returns_the_same_records_as_poke_mode(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(6)
    panel.set_order(ids[1], "Completed")
    panel.set_order(ids[4], "cancelled")
    store = InProcessStateStore()

    deferred = deferral(orders_sensor(order_ids=ids), task_context(store))
    pending = [ids[0], ids[2], ids[3], ids[5]]
    assert isinstance(deferred.trigger, OrderStatusTrigger) and deferred.trigger.order_ids == pending
    panel.set_order(ids[0], "Partial")
    panel.complete_all()
    event = trigger_event(deferred)
    records = resume(orders_sensor(order_ids=ids), task_context(store), deferred, event)

    poked = OrderStatusSensor(task_id="poke", order_ids=ids, poke_interval=0.05).execute(task_context())
    assert [record["order"] for record in records] == ids
    assert [record["status"] for record in records] == [
        "Partial",
        "Completed",
        "Completed",
        "Completed",
        "Canceled",
        "Completed",
    ]
    assert without_time(records) == without_time(poked)
    assert all(record["checked_at"] for record in records)
    # worker check: all 6; trigger: only the 4 pending; the resumed sensor reads their records; poke mode: all 6
    assert [sorted(batch) for batch in status_polls(panel)] == [ids, pending, pending, ids]
    assert set(event) == {"status", "message", "ended", "deadline"}, "the event carries no records"


def test_more_pending_orders_than_one_trigger_watches_are_waited_for_in_turns(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trigger watches at most MAX_TRIGGER_IDS orders (its arguments stay small): the sensor defers again."""
    monkeypatch.setattr("airflow_provider_mirpanel.sensors.mirpanel.MAX_TRIGGER_IDS", 2)
    panel.speed = 0
    ids = panel.create_orders(5)
    store = InProcessStateStore()

    first = deferral(orders_sensor(order_ids=ids), task_context(store))
    assert first.trigger.order_ids == ids[:2]
    for order in ids[:3]:
        panel.set_order(order, "Completed")
    with pytest.raises(TaskDeferred) as caught:
        resume(orders_sensor(order_ids=ids), task_context(store), first, trigger_event(first))
    second = caught.value
    assert second.trigger.order_ids == ids[3:], "the next ones still pending"
    assert second.trigger.deadline == first.trigger.deadline, "the wait keeps its deadline"
    panel.complete_all()
    records = resume(orders_sensor(order_ids=ids), task_context(store), second, trigger_event(second))

    assert [record["order"] for record in records] == ids
    assert {record["status"] for record in records} <= {"Completed", "Partial"}
    assert [sorted(batch) for batch in status_polls(panel)] == [ids, ids[:2], ids, ids[3:], ids[3:]]


def test_the_trigger_watches_until_the_sensor_timeout_at_the_sensor_poke_interval(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(3)
    sensor = OrderStatusSensor(
        task_id="wait",
        order_ids=ids,
        deferrable=True,
        poke_interval=30,
        timeout=3600,
        failed_statuses=["cancelled"],
        terminal_statuses=["Completed"],
    )

    started = time.time()
    deferred = deferral(sensor, task_context())
    ended = time.time()

    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == "airflow_provider_mirpanel.triggers.mirpanel.OrderStatusTrigger"
    assert kwargs["order_ids"] == ids and kwargs["poll_interval"] == 30.0
    assert kwargs["terminal_statuses"] == ["Canceled", "Completed"] and kwargs["failed_statuses"] == ["Canceled"]
    assert started + 3600 <= kwargs["deadline"] <= ended + 3600
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is not None
    # What is left of the sensor's timeout when it deferred, plus the grace for a lost triggerer (the
    # millisecond allows for timedelta's rounding).
    left = (kwargs["deadline"] - ended - 0.001, kwargs["deadline"] - started + 0.001)
    assert left[0] + DEFER_GRACE_SECONDS <= deferred.timeout.total_seconds() <= left[1] + DEFER_GRACE_SECONDS
    assert panel.api_key not in json.dumps(kwargs)


def test_statuses_rendered_as_text_reach_the_trigger_as_lists(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(1)
    sensor = orders_sensor(order_ids=ids, terminal_statuses="['Completed', 'partial']", failed_statuses="Refunded")

    _, kwargs = deferral(sensor, {}).trigger.serialize()

    assert kwargs["terminal_statuses"] == ["Completed", "Partial", "Refunded"]
    assert kwargs["failed_statuses"] == ["Refunded"]


def test_orders_already_done_on_the_worker_never_defer(panel: SandboxPanel) -> None:
    ids = panel.create_orders(3, status="Completed")
    records = orders_sensor(order_ids=ids).execute(task_context())
    assert [record["order"] for record in records] == ids and panel.count("status") == 1


def test_without_a_state_store_the_resumed_sensor_asks_about_every_order(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(3)
    panel.set_order(ids[0], "Completed")

    deferred = deferral(orders_sensor(order_ids=ids), {})
    assert deferred.trigger.order_ids == ids[1:]
    panel.complete_all()
    records = resume(orders_sensor(order_ids=ids), {}, deferred, trigger_event(deferred))

    assert [record["order"] for record in records] == ids
    assert status_polls(panel)[-1] == ids, "the finished records of the first check were not kept"


def test_reschedule_mode_defers_too(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(2)
    sensor = orders_sensor(order_ids=ids, mode="reschedule")

    class FirstTry:
        def get_first_reschedule_date(self, context: Any) -> None:
            return None

    assert deferral(sensor, task_context(ti=FirstTry())).trigger.order_ids == ids


def test_a_transient_failure_on_the_worker_defers_anyway(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(2, status="Completed")
    panel.faults.add("status", "html", times=2)  # the worker's check and its one retry

    deferred = deferral(orders_sensor(order_ids=ids), task_context())
    assert deferred.trigger.order_ids == ids
    records = resume(orders_sensor(order_ids=ids), {}, deferred, trigger_event(deferred))

    assert [record["status"] for record in records] == ["Completed", "Completed"]


def test_refill_sensor_defers_to_the_refill_trigger(panel: SandboxPanel) -> None:
    panel.speed = 0
    orders = panel.create_orders(4, status="Completed")
    refills = [panel.state.create_refill(panel.state.orders[order]).id for order in orders]
    store = InProcessStateStore()
    sensor = RefillStatusSensor(task_id="wait", refill_ids=refills, deferrable=True, poke_interval=0.05)

    deferred = deferral(sensor, task_context(store))
    assert isinstance(deferred.trigger, RefillStatusTrigger) and deferred.trigger.refill_ids == refills
    panel.speed = 1000  # refills end within 0.1 s; every 4th is rejected
    records = resume(sensor, task_context(store), deferred, trigger_event(deferred))

    assert [record["refill"] for record in records] == refills
    assert [record["status"] for record in records] == ["Completed", "Completed", "Completed", "Rejected"]


# -- the same failures as poke mode ----------------------------------------------------------------


def test_a_failed_status_seen_by_the_trigger_fails_like_poke_mode(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(3)
    store = InProcessStateStore()
    deferred = deferral(orders_sensor(order_ids=ids, failed_statuses=["Canceled"]), task_context(store))
    panel.set_order(ids[1], "Canceled")
    event = trigger_event(deferred)

    with pytest.raises(AirflowFailException) as deferred_failure:
        resume(orders_sensor(order_ids=ids, failed_statuses=["Canceled"]), {}, deferred, event)
    with pytest.raises(AirflowFailException) as poke_failure:
        OrderStatusSensor(task_id="poke", order_ids=ids, failed_statuses=["Canceled"]).execute(task_context())

    assert str(deferred_failure.value) == str(poke_failure.value) == f"1 order(s) ended Canceled: {ids[1]}"


def test_unknown_orders_fail_on_the_worker_without_deferring(panel: SandboxPanel) -> None:
    with pytest.raises(AirflowFailException, match="Incorrect order ID"):
        orders_sensor(order_ids=[1, 2]).execute(task_context())


def test_the_sensor_timeout_ends_a_deferred_wait_with_sensor_timeout(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(2)
    deferred = deferral(orders_sensor(order_ids=ids, timeout=3600), {})
    deferred.trigger.deadline = time.time() - 1  # the deadline has passed, whatever this machine's load
    event = trigger_event(deferred)

    assert event["status"] == "timeout" and event["ids"] == ids
    with pytest.raises(AirflowSensorTimeout, match="2 of 2 orders had not ended"):
        resume(orders_sensor(order_ids=ids, timeout=0.3), {}, deferred, event)
    with pytest.raises(AirflowSkipException):
        resume(orders_sensor(order_ids=ids, timeout=0.3, soft_fail=True), {}, deferred, event)


def test_a_scheduler_side_deferral_timeout_is_a_sensor_timeout_too(panel: SandboxPanel) -> None:
    sensor = orders_sensor(order_ids=[1])
    with pytest.raises(AirflowSensorTimeout):
        sensor.resume_execution("__fail__", {"error": "Trigger timeout"}, task_context())


def test_an_error_event_fails_the_task_with_the_panel_message(panel: SandboxPanel) -> None:
    with pytest.raises(MirPanelError, match="Invalid API key"):
        orders_sensor(order_ids=[1]).execute_complete(task_context(), {"status": "error", "message": "Invalid API key"})


@pytest.mark.parametrize(
    "event",
    [None, {}, {"status": "done"}, "success", {"status": "success", "deadline": "soon"}],
    ids=["missing", "empty", "unknown-status", "not-a-dict", "bad-deadline"],
)
def test_a_missing_or_unexpected_event_fails_loudly(panel: SandboxPanel, event: Any) -> None:
    with pytest.raises(AirflowException) as caught:
        orders_sensor(order_ids=[1]).execute_complete(task_context(), event)
    assert type(caught.value) is AirflowException


def test_deferrable_defaults_to_operators_default_deferrable() -> None:
    code = (
        "from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor as S; "
        "print(S(task_id='t', order_ids=[1]).deferrable)"
    )
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "True", result.stderr[-2000:]
    assert OrderStatusSensor(task_id="t", order_ids=[1]).deferrable is False


# -- a real DAG run --------------------------------------------------------------------------------

DAG_ID = "mirpanel_deferrable_test"
DAG_FILE = '''
"""A DAG whose sensors defer; tests/unit/sensors/test_deferrable.py runs it with airflow dags test."""

import json
import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor, RefillStatusSensor

with DAG(dag_id="mirpanel_deferrable_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    # deferrable explicitly, and by [operators] default_deferrable (set by the test)
    wait_orders = OrderStatusSensor(task_id="wait_orders", order_ids=os.environ["MIRPANEL_TEST_ORDERS"],
                                    deferrable=True, poke_interval=0.2, timeout=120)
    wait_refills = RefillStatusSensor(task_id="wait_refills", refill_ids=os.environ["MIRPANEL_TEST_REFILLS"],
                                      poke_interval=0.2, timeout=120)

    @task
    def collect(**context):
        ti = context["ti"]
        out = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in ("wait_orders", "wait_refills")}
        with open(os.environ["MIRPANEL_TEST_OUTPUT"], "w") as file:
            json.dump(out, file)

    [wait_orders, wait_refills] >> collect()
'''


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow home with a migrated SQLite DB and a DAGs folder holding the deferrable DAG."""
    home = tmp_path_factory.mktemp("airflow-deferrable")
    dags = home / "dags"
    dags.mkdir()
    (dags / "mirpanel_deferrable_dag.py").write_text(textwrap.dedent(DAG_FILE))
    return airflow_home(home, dags, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="True")


@pytest.mark.slow  # an Airflow run or a CLI process: seconds
def test_a_dag_run_with_deferrable_sensors_completes_and_pushes_the_final_records(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    with SandboxPanel(speed=0) as panel:
        done = panel.create_orders(2, status="Completed")
        waiting = panel.create_orders(3)
        orders = [waiting[0], *done, *waiting[1:]]
        refills = [panel.state.create_refill(panel.state.orders[order]).id for order in done]
        output = tmp_path / "xcom.json"
        env = {
            **airflow_env,
            **panel.env(),
            "MIRPANEL_TEST_OUTPUT": str(output),
            "MIRPANEL_TEST_ORDERS": json.dumps(orders),
            "MIRPANEL_TEST_REFILLS": json.dumps(refills),
        }
        # The two sensors run in either order; each one's IDs end once it was asked three times: the
        # check on the worker (which found them running, so the sensor deferred) and two trigger polls.
        with (
            once(
                lambda: panel.count("status") >= 3, lambda: [panel.set_order(order, "Completed") for order in waiting]
            ),
            once(
                lambda: panel.count("refill_status") >= 3,
                lambda: [panel.set_refill(refill, "Completed") for refill in refills],
            ),
        ):
            result = run_airflow(env, "dags", "test", DAG_ID, timeout=600)

        assert output.exists(), (result.stdout[-5000:], result.stderr[-5000:])
        out = json.loads(output.read_text())
        logs = result.stdout + result.stderr
        assert logs.count("running trigger in line") == 2  # both sensors deferred, one by the config default
        assert [record["order"] for record in out["wait_orders"]] == orders
        assert {record["status"] for record in out["wait_orders"]} == {"Completed"}
        assert all(record["checked_at"] and record["error"] is None for record in out["wait_orders"])
        assert [record["refill"] for record in out["wait_refills"]] == refills
        assert {record["status"] for record in out["wait_refills"]} == {"Completed"}
        polls = status_polls(panel)
        assert len(polls) >= 3 and sorted(polls[0]) == sorted(orders)  # the check on the worker
        # The trigger asks about pending orders only; below 3.3 (no task_state_store to keep what the check on
        # the worker found) the resumed sensor's last check asks about all of them once more.
        trigger_polls = polls[1:] if STATE_STORES else polls[1:-1]
        assert all(sorted(batch) == sorted(waiting) for batch in trigger_polls), (polls, waiting)
        assert STATE_STORES or sorted(polls[-1]) == sorted(orders)
        assert panel.count("refill_status") >= 3
        assert panel.api_key not in logs


def test_a_trigger_of_the_most_ids_a_sensor_hands_it_serializes_under_64_kb() -> None:
    from airflow_provider_mirpanel.triggers.mirpanel import MAX_TRIGGER_IDS

    largest = [2**63 - 1 - number for number in range(MAX_TRIGGER_IDS)]  # the longest IDs there are
    _, kwargs = OrderStatusTrigger(largest, deadline=time.time()).serialize()

    assert len(json.dumps(kwargs)) < 64 * 1024


def test_a_sensor_on_3000_pending_orders_hands_its_trigger_2500(panel: SandboxPanel) -> None:
    panel.speed = 0
    ids = panel.create_orders(3000)

    deferred = deferral(orders_sensor(order_ids=ids), task_context())

    assert deferred.trigger.order_ids == ids[:2500]
