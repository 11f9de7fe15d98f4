"""Sensors against the sandbox panel over real HTTP on 127.0.0.1, in poke and reschedule mode."""

from __future__ import annotations

import json
import re
from typing import Any, cast

import pytest
from airflow.sdk import Context, PokeReturnValue
from support.airflow_compat import AirflowRescheduleException, deserialize, serialize
from support.task_context import task_context

from airflow_provider_mirpanel.operators.mirpanel import RefillOperator
from airflow_provider_mirpanel.records import to_dataframe
from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor, RefillStatusSensor
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore
from airflow_provider_mirpanel.version_compat import AirflowFailException


class FakeTaskInstance:
    """What BaseSensorOperator.execute asks of the task instance in reschedule mode."""

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def asked_ids(panel: SandboxPanel, action: str = "status") -> list[int]:
    """Every ID the panel was asked about, in request order."""
    return [item for entry in panel.requests if entry.action == action for item in entry.ids]


def final_records(result: PokeReturnValue) -> list[dict[str, Any]]:
    assert isinstance(result.xcom_value, list)
    return result.xcom_value


def poke(sensor: OrderStatusSensor | RefillStatusSensor, context: Context) -> PokeReturnValue:
    result = sensor.poke(context)
    assert isinstance(result, PokeReturnValue)
    return result


def frozen_orders(panel: SandboxPanel, n: int) -> list[int]:
    """``n`` orders on a frozen clock: they stay Pending until a test finishes them."""
    panel.speed = 0
    return panel.create_orders(n)


# ---------------------------------------------------------------------------------------------
# OrderStatusSensor
# ---------------------------------------------------------------------------------------------


def test_each_poke_asks_only_about_orders_not_yet_finished(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 5)
    panel.set_order(ids[0], "Completed")
    panel.set_order(ids[1], "partial")
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids)
    context = task_context()

    first = poke(sensor, context)
    assert not first.is_done and asked_ids(panel) == ids

    for order_id in ids[2:]:
        panel.set_order(order_id, "Completed")
    panel.requests.clear()
    second = poke(sensor, context)

    assert second.is_done and asked_ids(panel) == ids[2:]
    records = final_records(second)
    assert [r["order"] for r in records] == ids
    assert [r["status"] for r in records] == ["Completed", "Partial", "Completed", "Completed", "Completed"]
    assert all(r["checked_at"] and r["error"] is None for r in records)


def test_first_poke_of_250_orders_takes_three_requests(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 250)

    assert not poke(OrderStatusSensor(task_id="wait", order_ids=ids), {}).is_done

    assert panel.count("status") == 3 and sorted(asked_ids(panel)) == ids


def test_progress_is_logged_each_poke(panel: SandboxPanel, capsys: pytest.CaptureFixture[str]) -> None:
    ids = frozen_orders(panel, 4)
    panel.set_order(ids[0], "Completed")
    panel.set_order(ids[1], "In progress", remains=60)

    poke(OrderStatusSensor(task_id="wait", order_ids=ids), {})

    out = capsys.readouterr().out
    assert "1/4 orders done; " in out and " remaining units; statuses: " in out
    assert "Completed 1" in out and "In progress 1" in out and "Pending 2" in out


def test_a_failed_poke_is_logged_as_failed_not_as_progress(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONN_ENV_VAR, json.dumps(panel.connection(retries=1, backoff=0.01)))
    ids = frozen_orders(panel, 20)
    panel.set_order(ids[0], "Completed")
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=60)
    context = task_context()
    poke(sensor, context)
    panel.faults.add("status", "http_status", status=503, times=2)  # the poke and its one retry
    capsys.readouterr()

    assert not poke(sensor, context).is_done

    out = capsys.readouterr().out
    assert re.search(r"poll failed \(.*503.*\); 19 of 20 orders still pending, asking again in 60 s", out), out
    assert "orders done" not in out


def test_poke_mode_waits_until_every_order_ends_and_returns_the_records(panel: SandboxPanel) -> None:
    ids = panel.create_orders(3)  # the fast clock ends them within a fraction of a second
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, poke_interval=0.05, timeout=60)

    records = sensor.execute({})

    assert [r["order"] for r in records] == ids
    assert {r["status"] for r in records} <= {"Completed", "Partial"}
    assert set(asked_ids(panel)) == set(ids) and panel.count("status") >= 1
    pulled = deserialize(json.loads(json.dumps(serialize(records))))
    assert pulled == records
    frame = to_dataframe(cast(list[dict[str, Any]], pulled))
    assert str(frame["checked_at"].dtype) == "datetime64[ns, UTC]" and str(frame["order"].dtype) == "Int64"


def test_a_failed_status_fails_the_sensor_at_once(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 3)
    panel.set_order(ids[1], "cancelled")
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, failed_statuses={"Canceled"})

    with pytest.raises(AirflowFailException, match=rf"1 order\(s\) ended Canceled: {ids[1]}"):
        sensor.execute({})

    assert panel.count("status") == 1


def test_an_unknown_order_id_fails_the_sensor_naming_it(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 2)

    with pytest.raises(AirflowFailException, match=r"could not be checked \(Incorrect order ID\): 5, 6"):
        OrderStatusSensor(task_id="wait", order_ids=[ids[0], 5, ids[1], 6]).execute({})


def test_terminal_statuses_are_configurable(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 2)
    panel.set_order(ids[0], "In progress")
    panel.set_order(ids[1], "Completed")
    sensor = OrderStatusSensor(task_id="wait", order_ids=ids, terminal_statuses=["in progress", "Completed"])

    result = poke(sensor, {})

    assert result.is_done and [r["status"] for r in final_records(result)] == ["In progress", "Completed"]


def test_reschedule_mode_keeps_finished_orders_in_the_task_state_store(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 4)
    panel.set_order(ids[0], "Completed")
    store = InProcessStateStore()
    context = task_context(store, ti=FakeTaskInstance())

    def new_sensor() -> OrderStatusSensor:  # Airflow builds the sensor anew for every reschedule poke
        return OrderStatusSensor(task_id="wait", order_ids=ids, mode="reschedule", poke_interval=60)

    with pytest.raises(AirflowRescheduleException):
        new_sensor().execute(context)
    assert asked_ids(panel) == ids

    panel.set_order(ids[1], "Refunded")
    panel.requests.clear()
    with pytest.raises(AirflowRescheduleException):
        new_sensor().execute(context)
    assert asked_ids(panel) == ids[1:]

    for order_id in ids[2:]:
        panel.set_order(order_id, "Completed")
    panel.requests.clear()
    records = new_sensor().execute(context)

    assert asked_ids(panel) == ids[2:]
    assert [(r["order"], r["status"]) for r in records] == [
        (ids[0], "Completed"),
        (ids[1], "Refunded"),
        (ids[2], "Completed"),
        (ids[3], "Completed"),
    ]
    assert all(len(json.dumps(value)) < 64_000 for value in store.values.values())


def test_reschedule_mode_without_a_store_asks_about_every_order_again(
    panel: SandboxPanel, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = frozen_orders(panel, 3)
    panel.set_order(ids[0], "Completed")
    context = cast(Context, {"ti": FakeTaskInstance()})  # no task_state_store
    for _ in range(2):
        with pytest.raises(AirflowRescheduleException):
            OrderStatusSensor(task_id="wait", order_ids=ids, mode="reschedule").execute(context)

    assert asked_ids(panel) == ids + ids
    assert "every reschedule poke asks about all 3 IDs" in capsys.readouterr().out


def test_stored_records_of_other_orders_are_not_taken(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 3)
    panel.set_order(ids[0], "Completed")
    store = InProcessStateStore()
    poke(OrderStatusSensor(task_id="wait", order_ids=ids[:2]), task_context(store))
    panel.requests.clear()

    poke(OrderStatusSensor(task_id="wait", order_ids=ids), task_context(store))

    assert asked_ids(panel) == ids


def test_thousands_of_finished_orders_are_stored_in_small_pages(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 1200)
    for order_id in ids[:-1]:
        panel.set_order(order_id, "Completed")
    store = InProcessStateStore()
    poke(OrderStatusSensor(task_id="wait", order_ids=ids), task_context(store))
    panel.requests.clear()

    result = poke(OrderStatusSensor(task_id="wait", order_ids=ids), task_context(store))

    assert not result.is_done and asked_ids(panel) == ids[-1:]
    assert max(len(json.dumps(value)) for value in store.values.values()) < 64_000
    assert len(store.values) == 4  # meta + 3 pages of at most 400 records


def test_order_ids_and_statuses_come_from_jinja_text(panel: SandboxPanel) -> None:
    ids = frozen_orders(panel, 2)
    panel.set_order(ids[0], "Completed")
    panel.set_order(ids[1], "Refunded")
    for bad in ("Refunded", "['cancelled', 'Refunded']", "Canceled, refunded"):
        sensor = OrderStatusSensor(task_id="wait", order_ids="{{ params.ids }}", failed_statuses="{{ params.bad }}")
        sensor.render_template_fields({"params": {"ids": ids, "bad": bad}})
        with pytest.raises(AirflowFailException, match=rf"ended Refunded: {ids[1]}"):
            poke(sensor, {})

    sensor = OrderStatusSensor(task_id="wait", order_ids="{{ params.ids }}", failed_statuses="{{ params.bad }}")
    sensor.render_template_fields({"params": {"ids": ids, "bad": ["Canceled"]}})
    assert [r["order"] for r in final_records(poke(sensor, task_context()))] == ids


# ---------------------------------------------------------------------------------------------
# RefillStatusSensor
# ---------------------------------------------------------------------------------------------


def refills(panel: SandboxPanel, n: int) -> list[int]:
    """``n`` refills of completed orders (requested through the RefillOperator), clock frozen."""
    service = next(s for s in panel.catalogue.services if s.get("type") == "Default" and s.get("refill") is True)
    orders = panel.create_orders(n, service=service["service"], status="Completed")
    panel.speed = 0
    records = RefillOperator(task_id="refill", order_ids=orders).execute({})
    panel.requests.clear()
    return [cast(int, r["refill"]) for r in records]


def test_refill_sensor_waits_for_every_refill(panel: SandboxPanel) -> None:
    ids = refills(panel, 3)
    panel.set_refill(ids[0], "Completed")
    sensor = RefillStatusSensor(task_id="wait", refill_ids=ids)
    context = task_context()

    assert not poke(sensor, context).is_done
    panel.set_refill(ids[1], "Rejected")
    panel.set_refill(ids[2], "Completed")
    panel.requests.clear()
    done = poke(sensor, context)

    assert done.is_done and asked_ids(panel, "refill_status") == ids[1:]
    assert [(r["refill"], r["status"]) for r in final_records(done)] == [
        (ids[0], "Completed"),
        (ids[1], "Rejected"),
        (ids[2], "Completed"),
    ]
    frame = to_dataframe(done.xcom_value)
    assert str(frame["refill"].dtype) == "Int64" and str(frame["status"].dtype) == "string"


def test_refill_sensor_fails_on_a_named_status_or_an_unknown_refill(panel: SandboxPanel) -> None:
    ids = refills(panel, 2)
    panel.set_refill(ids[1], "Rejected")

    with pytest.raises(AirflowFailException, match=rf"1 refill\(s\) ended Rejected: {ids[1]}"):
        RefillStatusSensor(task_id="wait", refill_ids=ids, failed_statuses=["rejected"]).execute({})
    with pytest.raises(AirflowFailException, match=r"Refill not found\): 999"):
        RefillStatusSensor(task_id="wait", refill_ids=[ids[0], 999]).execute({})


def test_refill_sensor_in_poke_mode_returns_the_final_records(panel: SandboxPanel) -> None:
    ids = refills(panel, 2)
    panel.speed = 1000.0

    records = RefillStatusSensor(task_id="wait", refill_ids=ids, poke_interval=0.05, timeout=60).execute({})

    assert [r["refill"] for r in records] == ids and {r["status"] for r in records} <= {"Completed", "Rejected"}
