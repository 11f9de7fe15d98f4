"""PlaceOrderOperator against the sandbox panel over real HTTP on 127.0.0.1, with its request log as evidence."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from support.orders import ACTIVE_ORDER, campaign, link_ends, service_of, xcom_round_trip
from support.task_context import task_context

from airflow_provider_mirpanel.exceptions import MirPanelError, MirPanelInputError
from airflow_provider_mirpanel.operators.mirpanel import (
    PlaceOrderOperator,
    ServicesOperator,
)
from airflow_provider_mirpanel.placement.ledger import PAGE_PREFIX, LedgerEntry, LedgerState, PlacementLedger
from airflow_provider_mirpanel.placement.run import OrdersNotPlacedError, order_specs
from airflow_provider_mirpanel.records import to_dataframe
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore


def added_links(panel: SandboxPanel) -> list[str]:
    return [entry.form.get("link", "") for entry in panel.requests if entry.action == "add"]


def orders_by_link(panel: SandboxPanel) -> Counter[str]:
    return Counter(order.link or "" for order in list(panel.state.orders.values()))


def sending(store: InProcessStateStore, key: str, digest: str) -> None:
    """What a try that died after marking an order ``sending`` leaves in the task's ledger."""
    PlacementLedger(store).append({key: LedgerEntry(LedgerState.SENDING, digest)})


def test_place_one_order_returns_its_record(panel: SandboxPanel) -> None:
    service = service_of(panel)
    op = PlaceOrderOperator(
        task_id="place",
        service=service["service"],
        link="https://example.com/a",
        quantity=service["min"],
        order_parameters={"runs": 2, "interval": 30},
    )

    [record] = op.execute(task_context())

    order = panel.state.orders[record["order"]]
    assert record == {
        "key": "0",
        "state": "placed",
        "order": order.id,
        "service": service["service"],
        "link": "https://example.com/a",
        "quantity": service["min"],
        "runs": 2,
        "interval": 30,
        "cost": pytest.approx(float(service["rate"]) * service["min"] / 1000),
        "error": None,
    }
    assert order.params["runs"] == "2" and order.params["interval"] == "30"


def test_place_many_orders_concurrently_each_once(panel: SandboxPanel) -> None:
    service = service_of(panel)
    panel.latency = 0.05
    orders = campaign(service, 24)

    records = PlaceOrderOperator(task_id="place", orders=orders).execute(task_context())

    assert [r["state"] for r in records] == ["placed"] * 24
    assert [r["link"] for r in records] == [o["link"] for o in orders]  # input order kept
    assert orders_by_link(panel) == Counter(o["link"] for o in orders)
    assert panel.count("add") == 24 and panel.count("services") == 1
    assert panel.connections > 1  # several adds in flight at once


def test_max_concurrency_bounds_the_orders_in_flight(panel: SandboxPanel) -> None:
    orders = campaign(service_of(panel), 6)

    PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=1).execute({})

    assert panel.count("add") == 6 and panel.connections == 1


def test_invalid_orders_are_refused_naming_rows_before_any_add(panel: SandboxPanel) -> None:
    service = service_of(panel)
    orders = campaign(service, 5)
    orders[1]["quantity"] = service["min"] - 1
    orders[2]["service"] = 999_999_999
    del orders[3]["link"]
    orders[4]["colour"] = "red"

    with pytest.raises(MirPanelInputError) as refused:
        PlaceOrderOperator(task_id="place", orders=orders).execute(task_context())

    message = str(refused.value)
    assert "4 of 5 orders are invalid" in message
    assert f"row 1: quantity {service['min'] - 1} is below the service minimum {service['min']}" in message
    assert "row 2: service 999999999 is not in the panel's catalogue" in message
    assert "row 3: missing 'link'" in message
    assert "row 4: unknown order parameter(s) ['colour']" in message
    assert panel.count("add") == 0


def test_on_invalid_skip_places_the_valid_orders_and_reports_the_others(panel: SandboxPanel) -> None:
    service = service_of(panel)
    orders = campaign(service, 3)
    orders[1]["quantity"] = service["max"] + 1

    records = PlaceOrderOperator(task_id="place", orders=orders, on_invalid="skip").execute({})

    assert [r["state"] for r in records] == ["placed", "invalid", "placed"]
    assert "above the service maximum" in records[1]["error"] and records[1]["order"] is None
    assert sorted(added_links(panel)) == [orders[0]["link"], orders[2]["link"]]


def test_bad_single_order_arguments_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="either service"):
        PlaceOrderOperator(task_id="p", service=1, orders=[{"service": 1}])
    with pytest.raises(ValueError, match="either service"):
        PlaceOrderOperator(task_id="p")
    with pytest.raises(ValueError, match="on_unknown"):
        PlaceOrderOperator(task_id="p", service=1, on_unknown="maybe")


def test_check_balance_refuses_a_campaign_the_balance_does_not_cover(panel: SandboxPanel) -> None:
    service = service_of(panel)
    orders = campaign(service, 4, quantity=10_000)
    panel.state.balance = float(service["rate"]) * 10 * 3  # covers three of the four

    with pytest.raises(MirPanelError, match=r"estimated cost .* of 4 orders exceeds the balance"):
        PlaceOrderOperator(task_id="place", orders=orders, check_balance=True).execute({})

    assert panel.count("add") == 0


def test_check_balance_lets_a_covered_campaign_through(panel: SandboxPanel, capsys: pytest.CaptureFixture[str]) -> None:
    orders = campaign(service_of(panel), 2)

    records = PlaceOrderOperator(task_id="place", orders=orders, check_balance=True).execute({})

    assert [r["state"] for r in records] == ["placed", "placed"]
    assert panel.count("balance") == 1
    spent = sum(r["cost"] for r in records)
    assert (
        f"placed 2 of 2 orders; spent ~{spent:,.2f} USD (estimated from the catalogue rates); "
        "balance 1,000.00 USD covered it"
    ) in capsys.readouterr().out


def test_not_enough_funds_stops_placing_the_rest_and_a_retry_finishes(panel: SandboxPanel) -> None:
    service = service_of(panel)
    orders = campaign(service, 6, quantity=1000)
    cost = float(service["rate"])  # per 1000
    panel.state.balance = cost * 3.5
    store = InProcessStateStore()
    op = PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=1)

    with pytest.raises(OrdersNotPlacedError) as failed:
        op.execute(task_context(store))

    states = [r["state"] for r in failed.value.records]
    assert states == ["placed"] * 3 + ["refused", "not_sent", "not_sent"]
    assert "Not enough funds" in failed.value.records[3]["error"]
    assert panel.count("add") == 4

    panel.state.balance = 100.0
    panel.requests.clear()
    records = PlaceOrderOperator(task_id="place", orders=orders, max_concurrency=1).execute(task_context(store))

    assert [r["state"] for r in records] == ["placed"] * 6
    assert added_links(panel) == [o["link"] for o in orders[3:]]
    assert orders_by_link(panel) == Counter(o["link"] for o in orders)


def test_a_panel_refusal_is_recorded_and_fails_the_task_at_the_end(panel: SandboxPanel) -> None:
    orders = campaign(service_of(panel), 3)
    panel.faults.add("add", "error", error=ACTIVE_ORDER, when=link_ends("/1"))

    with pytest.raises(OrdersNotPlacedError) as failed:
        PlaceOrderOperator(task_id="place", orders=orders).execute({})

    assert [r["state"] for r in failed.value.records] == ["placed", "refused", "placed"]
    assert failed.value.records[1]["error"] == ACTIVE_ORDER
    assert "1 of 3 orders were not placed: key 1 refused" in str(failed.value)


def test_twenty_orders_are_placed_exactly_once_across_a_retry(panel: SandboxPanel) -> None:
    orders = campaign(service_of(panel), 20)
    panel.faults.add("add", "drop_after_processing", when=link_ends("/7"))  # order created, reply lost
    panel.faults.add("add", "error", error=ACTIVE_ORDER, when=link_ends("/12"), times=1)
    store = InProcessStateStore()  # task_state_store survives retries: one store for both tries

    with pytest.raises(OrdersNotPlacedError) as first:
        PlaceOrderOperator(task_id="place", orders=orders).execute(task_context(store))

    first_states = {r["key"]: r["state"] for r in first.value.records}
    assert first_states.pop("7") == "unknown" and first_states.pop("12") == "refused"
    assert set(first_states.values()) == {"placed"}
    ledger = PlacementLedger(store).load()
    assert ledger["7"].state is LedgerState.UNKNOWN and ledger["12"].state is LedgerState.REFUSED
    assert all(key.startswith(PAGE_PREFIX) for key in store.values), "the ledger's pages, nothing else"

    panel.requests.clear()
    with pytest.raises(OrdersNotPlacedError) as retry:
        PlaceOrderOperator(task_id="place", orders=orders).execute(task_context(store))

    assert added_links(panel) == ["https://example.com/post/12"]  # no request for the placed ones, none for 7
    records = retry.value.records
    assert records[12]["state"] == "placed" and records[12]["order"] in panel.state.orders
    assert records[7]["state"] == "unknown" and "not resent" in records[7]["error"]
    assert "key 7 unknown" in str(retry.value) and "on_unknown" in str(retry.value)
    unchanged = [i for i in range(20) if i not in (7, 12)]
    assert [records[i] for i in unchanged] == [first.value.records[i] for i in unchanged]
    assert orders_by_link(panel) == Counter(o["link"] for o in orders)  # each intended order exactly once


def test_on_unknown_skip_lets_the_task_succeed_without_resending(panel: SandboxPanel) -> None:
    orders = campaign(service_of(panel), 3)
    panel.faults.add("add", "drop_after_processing", when=link_ends("/1"))
    store = InProcessStateStore()
    with pytest.raises(OrdersNotPlacedError):
        PlaceOrderOperator(task_id="place", orders=orders).execute(task_context(store))
    panel.requests.clear()

    records = PlaceOrderOperator(task_id="place", orders=orders, on_unknown="skip").execute(task_context(store))

    assert [r["state"] for r in records] == ["placed", "skipped", "placed"]
    assert panel.count() == 0


def test_on_unknown_resend_places_the_unknown_order_again(panel: SandboxPanel) -> None:
    orders = campaign(service_of(panel), 2)
    store = InProcessStateStore()
    sending(store, "1", order_specs(orders)[1].digest)  # an earlier try died mid-send

    records = PlaceOrderOperator(task_id="place", orders=orders, on_unknown="resend").execute(task_context(store))

    assert [r["state"] for r in records] == ["placed", "placed"]
    assert sorted(added_links(panel)) == [o["link"] for o in orders]
    assert PlacementLedger(store).load()["1"].state is LedgerState.PLACED


def test_an_order_whose_try_died_mid_send_is_not_resent(panel: SandboxPanel) -> None:
    orders = campaign(service_of(panel), 3)
    store = InProcessStateStore()
    sending(store, "2", order_specs(orders)[2].digest)

    with pytest.raises(OrdersNotPlacedError) as failed:
        PlaceOrderOperator(task_id="place", orders=orders).execute(task_context(store))

    assert [r["state"] for r in failed.value.records] == ["placed", "placed", "unknown"]
    assert "the try ended between sending it and recording the reply" in failed.value.records[2]["error"]
    assert sorted(added_links(panel)) == [orders[0]["link"], orders[1]["link"]]


def test_user_keys_name_orders_and_must_be_unique(panel: SandboxPanel) -> None:
    service = service_of(panel)
    orders = [{**order, "key": f"spring-{i}"} for i, order in enumerate(campaign(service, 2))]
    store = InProcessStateStore()

    records = PlaceOrderOperator(task_id="place", orders=orders).execute(task_context(store))

    assert [r["key"] for r in records] == ["spring-0", "spring-1"]
    assert set(PlacementLedger(store).load()) == {"spring-0", "spring-1"}
    with pytest.raises(MirPanelInputError, match="key 'same' is used by 2 orders"):
        PlaceOrderOperator(task_id="place", orders=[{**o, "key": "same"} for o in orders]).execute({})


def test_a_key_reused_for_other_parameters_is_a_conflict_not_a_new_order(panel: SandboxPanel) -> None:
    service = service_of(panel)
    store = InProcessStateStore()
    PlaceOrderOperator(task_id="place", orders=campaign(service, 1)).execute(task_context(store))
    changed = [{**campaign(service, 1)[0], "link": "https://example.com/other"}]
    panel.requests.clear()

    with pytest.raises(OrdersNotPlacedError) as failed:
        PlaceOrderOperator(task_id="place", orders=changed).execute(task_context(store))

    [record] = failed.value.records
    assert record["state"] == "conflict" and "other parameters" in record["error"]
    assert panel.count("add") == 0


def test_without_task_state_store_it_places_once_and_warns(
    panel: SandboxPanel, capsys: pytest.CaptureFixture[str]
) -> None:
    records = PlaceOrderOperator(task_id="place", orders=campaign(service_of(panel), 2)).execute({})

    assert [r["state"] for r in records] == ["placed", "placed"]
    out = capsys.readouterr().out
    assert "No task_state_store in the context" in out
    assert "placed 2 of 2 orders" in out  # the one summary line


def test_orders_rendered_from_jinja_text_and_dataframe_rows(panel: SandboxPanel) -> None:
    import pandas as pd

    service = service_of(panel)
    table = pd.DataFrame(campaign(service, 2))
    table["runs"] = pd.array([None, 2], dtype="Int64")  # an empty cell is no parameter
    table["interval"] = pd.array([None, 15], dtype="Int64")
    from_frame = PlaceOrderOperator(task_id="p", orders=table.to_dict("records")).execute({})
    assert [r.get("runs") for r in from_frame] == [None, 2]

    for template in ("{{ params.orders | tojson }}", "{{ params.orders }}"):  # JSON, or a Python repr
        op = PlaceOrderOperator(task_id="p", orders=template)
        op.render_template_fields(
            {"params": {"orders": campaign(service, 1, link=f"https://example.com/{len(template)}")}}
        )
        [record] = op.execute({})
        assert record["state"] == "placed" and record["link"] == f"https://example.com/{len(template)}"


def test_placed_order_records_survive_xcom_and_become_typed_frames(panel: SandboxPanel) -> None:
    service = service_of(panel)
    orders = campaign(service, 3)
    orders[1]["quantity"] = 0
    records = PlaceOrderOperator(task_id="p", orders=orders, on_invalid="skip").execute({})

    pulled = xcom_round_trip(records)
    assert pulled == records
    frame = to_dataframe(pulled)
    assert list(frame.columns[:8]) == ["key", "state", "order", "service", "link", "quantity", "cost", "error"]
    assert {str(frame[c].dtype) for c in ("order", "service", "quantity")} == {"Int64"}
    assert str(frame["cost"].dtype) == "Float64" and str(frame["state"].dtype) == "string"
    assert frame["order"].isna().tolist() == [False, True, False]


def test_table_cells_become_parameters_and_empty_cells_none() -> None:
    import numpy as np
    import pandas as pd

    row = {
        "service": np.int64(5),
        "link": "https://x",
        "quantity": np.float64(100.0),
        "runs": pd.NA,
        "interval": np.float32("nan"),
        "key": None,
    }
    [spec] = order_specs([row])

    assert spec.error is None and spec.key == "0" and spec.service == 5
    assert spec.form == {"service": "5", "link": "https://x", "quantity": "100"}


def test_cost_estimates_by_service_type() -> None:
    from airflow_provider_mirpanel.placement.run import estimated_cost

    default = {"type": "Default", "rate": "2.5"}
    assert estimated_cost(default, {"service": "1", "quantity": "2000"}) == 5.0
    assert estimated_cost({"type": "Package", "rate": 7}, {"service": "1", "link": "x"}) == 7.0
    assert estimated_cost({"type": "Custom Comments", "rate": 10}, {"service": "1", "comments": "a\nb"}) == 0.02
    assert estimated_cost({"type": "Subscriptions", "rate": 1}, {"service": "1", "username": "u"}) is None
    assert estimated_cost({"type": "Default"}, {"service": "1", "quantity": "5"}) is None


def test_a_services_operator_result_is_the_catalogue_of_many_placements(panel: SandboxPanel) -> None:
    """20 placements (as mapped tasks would be) checked against one ServicesOperator result: one services call."""
    service = service_of(panel)
    catalogue = xcom_round_trip(ServicesOperator(task_id="s", service_ids=[service["service"]]).execute({}))

    for n in range(20):
        orders = [{**order, "link": f"{order['link']}/{n}"} for order in campaign(service, 2)]
        records = PlaceOrderOperator(task_id="place", orders=orders, services=catalogue).execute({})
        assert [r["state"] for r in records] == ["placed", "placed"]

    assert panel.count("services") == 1 and panel.count("add") == 40
    other = service_of(panel, "Package")
    with pytest.raises(MirPanelInputError, match=f"service {other['service']} is not in the panel's catalogue"):
        PlaceOrderOperator(
            task_id="place", services=json.dumps(catalogue), service=other["service"], link="https://example.com/x"
        ).execute({})
    with pytest.raises(MirPanelInputError, match="services must be a list of dicts"):
        PlaceOrderOperator(task_id="place", services="nonsense", orders=campaign(service, 1)).execute({})
    assert panel.count("add") == 40


class _Retry:
    try_number = 2


def test_a_retry_after_an_upgrade_reads_the_first_release_ledger(panel: SandboxPanel) -> None:
    """The first release kept one value per order: a retry that finds no pages reads those, sends nothing twice."""
    orders = campaign(service_of(panel), 2)
    store = InProcessStateStore()
    store.set("mirpanel.order.0", {"state": "placed", "digest": order_specs(orders)[0].digest, "order": 4242})
    store.set("mirpanel.order.1", {"state": "sending", "digest": order_specs(orders)[1].digest})

    with pytest.raises(OrdersNotPlacedError) as failed:
        PlaceOrderOperator(task_id="place", orders=orders).execute(task_context(store, ti=_Retry()))

    assert [(r["state"], r["order"]) for r in failed.value.records] == [("placed", 4242), ("unknown", None)]
    assert panel.count("add") == 0
