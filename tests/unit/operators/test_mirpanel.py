"""The reading operators (services, status, refill, cancel, balance) against the sandbox panel over real HTTP.

Placing orders is in ``test_orders.py``; the sandbox's request log is the evidence."""

from __future__ import annotations

import json

import pytest
from support.orders import ACTIVE_ORDER, campaign, link_ends, service_of, xcom_round_trip

from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.operators.mirpanel import (
    BalanceCheckOperator,
    CancelOrdersOperator,
    OrderStatusOperator,
    PlaceOrderOperator,
    RefillOperator,
    ServicesOperator,
)
from airflow_provider_mirpanel.placement.run import OrdersNotPlacedError
from airflow_provider_mirpanel.records import to_dataframe
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.version_compat import AirflowFailException, AirflowSkipException


def test_services_operator_returns_the_whole_catalogue_as_records(panel: SandboxPanel) -> None:
    records = ServicesOperator(task_id="services").execute({})

    assert len(records) == len(panel.catalogue) == 4156
    assert panel.count("services") == 1
    first = records[0]
    assert isinstance(first["service"], int) and isinstance(first["rate"], float) and isinstance(first["min"], int)


def test_services_operator_filters_by_category_name_type_and_ids(panel: SandboxPanel) -> None:
    instagram = ServicesOperator(task_id="s", category="INSTAGRAM", service_type="default").execute({})
    assert instagram and all("instagram" in r["category"].lower() and r["type"] == "Default" for r in instagram)

    named = ServicesOperator(task_id="s", name="views").execute({})
    assert named and all("views" in r["name"].lower() for r in named)

    wanted = [s["service"] for s in panel.catalogue.services[:3]]
    by_id = ServicesOperator(task_id="s", service_ids=f"{wanted[0]}, {wanted[1]},{wanted[2]}").execute({})
    assert [r["service"] for r in by_id] == wanted

    assert ServicesOperator(task_id="s", service_ids=[wanted[0]], service_type="Package").execute({}) == []


def test_services_records_survive_xcom_and_become_typed_frames(panel: SandboxPanel) -> None:
    records = ServicesOperator(task_id="s", category="youtube").execute({})

    pulled = xcom_round_trip(records)
    assert pulled == records
    frame = to_dataframe(pulled)
    assert str(frame["service"].dtype) == "Int64" and str(frame["rate"].dtype) == "Float64"
    assert str(frame["refill"].dtype) == "boolean" and str(frame["name"].dtype) == "string"


def test_status_of_250_orders_takes_three_requests_with_checked_at(panel: SandboxPanel) -> None:
    ids = panel.create_orders(249, status="In progress")

    records = OrderStatusOperator(task_id="status", order_ids=[*ids, 5]).execute({})

    assert panel.count("status") == 3
    assert [r["order"] for r in records] == [*ids, 5]
    assert {r["status"] for r in records[:-1]} == {"In progress"}
    assert records[-1]["error"] == "Incorrect order ID" and records[-1]["status"] is None
    assert len({r["checked_at"] for r in records}) == 1 and records[0]["checked_at"].endswith("+00:00")
    frame = to_dataframe(xcom_round_trip(records))
    assert str(frame["checked_at"].dtype) == "datetime64[ns, UTC]" and str(frame["remains"].dtype) == "Int64"


def test_order_ids_come_from_jinja_text(panel: SandboxPanel) -> None:
    ids = panel.create_orders(3, status="Completed")
    op = OrderStatusOperator(task_id="status", order_ids="{{ params.ids }}")
    op.render_template_fields({"params": {"ids": ids}})

    records = op.execute({})

    assert [r["order"] for r in records] == ids and {r["status"] for r in records} == {"Completed"}


def test_refill_records_hold_refill_ids_or_the_panels_reason(panel: SandboxPanel) -> None:
    refillable = service_of(panel, refill=True)
    done = panel.create_orders(2, service=refillable["service"], status="Completed")
    running = panel.create_orders(1, service=refillable["service"], status="In progress")

    records = RefillOperator(task_id="refill", order_ids=[*done, *running, 7]).execute({})

    assert [r["order"] for r in records] == [*done, *running, 7]
    assert all(isinstance(r["refill"], int) and r["error"] is None for r in records[:2])
    assert records[2]["refill"] is None and "not eligible" in str(records[2]["error"]).lower()
    assert records[3]["error"] == "Incorrect order ID"
    assert set(panel.state.refills) == {r["refill"] for r in records[:2]}
    assert str(to_dataframe(xcom_round_trip(records))["refill"].dtype) == "Int64"


def test_refill_fail_on_error_fails_after_requesting_all(panel: SandboxPanel) -> None:
    with pytest.raises(MirPanelError, match="refill requested for 0 of 1 orders; 1 refused: 7"):
        RefillOperator(task_id="refill", order_ids=[7], fail_on_error=True).execute({})


def test_cancel_records_per_order(panel: SandboxPanel) -> None:
    cancelable = service_of(panel, cancel=True)
    pending = panel.create_orders(2, service=cancelable["service"], status="Pending")
    finished = panel.create_orders(1, service=cancelable["service"], status="Completed")

    records = CancelOrdersOperator(task_id="cancel", order_ids=[*pending, *finished]).execute({})

    assert [(r["order"], r["cancel"]) for r in records] == [
        (pending[0], True),
        (pending[1], True),
        (finished[0], False),
    ]
    assert records[2]["error"]
    assert {panel.state.orders[i].status for i in pending} == {"Canceled"}
    frame = to_dataframe(xcom_round_trip(records))
    assert str(frame["cancel"].dtype) == "boolean"


def test_balance_record_without_threshold(panel: SandboxPanel) -> None:
    record = BalanceCheckOperator(task_id="balance").execute({})

    assert record["balance"] == 1000.0 and record["currency"] == "USD" and record["checked_at"]
    frame = to_dataframe(xcom_round_trip(record))
    assert len(frame) == 1 and str(frame["balance"].dtype) == "Float64"


def test_low_balance_fails_by_default_stating_balance_threshold_and_currency(panel: SandboxPanel) -> None:
    with pytest.raises(AirflowFailException, match=r"balance 1,000.00 USD is below the threshold 5,000.00 USD"):
        BalanceCheckOperator(task_id="balance", min_balance=5000).execute({})


def test_low_balance_can_skip_or_warn(panel: SandboxPanel, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AirflowSkipException, match="below the threshold"):
        BalanceCheckOperator(task_id="balance", min_balance="1500.5", on_low="skip").execute({})

    record = BalanceCheckOperator(task_id="balance", min_balance=1500, on_low="warn").execute({})

    assert record["balance"] == 1000.0
    assert "balance 1,000.00 USD is below the threshold 1,500.00 USD" in capsys.readouterr().out


def test_balance_above_threshold_passes(panel: SandboxPanel) -> None:
    assert BalanceCheckOperator(task_id="balance", min_balance=10).execute({})["balance"] == 1000.0


def test_the_api_key_never_appears_in_records_logs_errors_or_reprs(
    panel: SandboxPanel, capsys: pytest.CaptureFixture[str]
) -> None:
    service = service_of(panel)
    orders = campaign(service, 3)
    panel.faults.add("add", "drop_after_processing", when=link_ends("/1"))
    panel.faults.add("add", "error", error=ACTIVE_ORDER, when=link_ends("/2"))
    texts: list[str] = []
    place = PlaceOrderOperator(task_id="place", orders=orders)
    with pytest.raises(OrdersNotPlacedError) as failed:
        place.execute({})
    texts += [str(failed.value), repr(failed.value), json.dumps(failed.value.records), repr(place.hook)]
    ids = [r["order"] for r in failed.value.records if r["order"]]
    for op in (
        OrderStatusOperator(task_id="s", order_ids=ids),
        RefillOperator(task_id="r", order_ids=ids),
        CancelOrdersOperator(task_id="c", order_ids=ids),
        BalanceCheckOperator(task_id="b"),
        ServicesOperator(task_id="v", service_ids=[service["service"]]),
    ):
        texts.append(json.dumps(op.execute({})))
        texts.append(repr(op))
    with pytest.raises(AirflowFailException) as low:
        BalanceCheckOperator(task_id="b", min_balance=10**6).execute({})
    texts.append(str(low.value))
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]

    assert all(panel.api_key not in text for text in texts)
