"""Exactly once across DAG runs: ledger scopes, unknown outcomes that fail without retries, resolving them.

Each "run" is a ``PlaceOrderOperator.execute`` with a fresh ``task_state_store`` (as a new DAG run
gets) and one shared asset state store (as the deployment keeps it); the sandbox panel's own order
list is the evidence. ``test_examples.py`` shows the same with real ``airflow dags test`` runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from support.airflow_compat import STATE_STORES, needs_state_stores
from support.stores import MemoryAssetStores
from support.task_context import task_context

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator, ResolveOrdersOperator
from airflow_provider_mirpanel.placement.ledger import LedgerEntry, LedgerState, PlacementLedger, ledger_asset
from airflow_provider_mirpanel.placement.run import OrdersNotPlacedError, OrdersUnresolvedError
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore
from airflow_provider_mirpanel.version_compat import AirflowFailException


def rows(panel: SandboxPanel, n: int) -> list[dict[str, Any]]:
    service = next(s for s in panel.catalogue.services if s.get("type") == "Default")
    return [
        {
            "key": f"row-{i}",
            "service": service["service"],
            "link": f"https://example.com/p/{i}",
            "quantity": service["min"],
        }
        for i in range(n)
    ]


def orders_per_link(panel: SandboxPanel) -> Counter[str]:
    return Counter(order.link or "" for order in list(panel.state.orders.values()))


class FakeTI:
    def __init__(self, try_number: int):
        self.try_number = try_number


def run(
    orders: list[dict[str, Any]],
    assets: MemoryAssetStores | None,
    scope: str | None = "spring",
    try_number: int = 1,
    store: MemoryStateStore | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]] | None, Exception | None]:
    """One try of a new DAG run (its own task_state_store): (records, None) or (None, error)."""
    context: dict[str, Any] = {"ti": FakeTI(try_number)}
    if store is not None or assets is not None:
        context["task_state_store"] = store if store is not None else MemoryStateStore()
    if assets is not None:
        context["asset_state_store"] = assets
    op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope=scope, **kwargs)
    try:
        return op.execute(context), None  # type: ignore[arg-type]
    except Exception as error:
        return getattr(error, "records", None), error


def states(records: list[dict[str, Any]] | None) -> list[str]:
    assert records is not None
    return [record["state"] for record in records]


@needs_state_stores
def test_a_scope_puts_the_ledger_asset_in_the_tasks_inlets() -> None:
    op = PlaceOrderOperator(task_id="p", orders=[], ledger_scope="{{ params.campaign }}", mirpanel_conn_id="panel_b")

    assert op.inlets == [ledger_asset("panel_b")]
    assert ledger_asset("panel_b").name == "mirpanel_order_ledger__panel_b"
    assert {"ledger_scope", "on_unknown"} <= set(op.template_fields)
    assert PlaceOrderOperator(task_id="p", orders=[]).inlets == []


@needs_state_stores
def test_a_new_run_of_the_scope_returns_placed_orders_without_a_request(panel: SandboxPanel) -> None:
    orders = rows(panel, 6)
    assets = MemoryAssetStores()
    first, error = run(orders, assets)
    assert error is None
    panel.requests.clear()

    again, error = run(orders, assets)

    assert error is None and states(again) == ["placed"] * 6
    assert [r["order"] for r in again or []] == [r["order"] for r in first or []]
    assert panel.count() == 0, "nothing asked, nothing bought"
    assert orders_per_link(panel) == Counter(o["link"] for o in orders)


@needs_state_stores
def test_lost_replies_are_never_bought_again_by_a_later_run(panel: SandboxPanel) -> None:
    """The panel processed two adds but their replies were lost; the next run buys neither again."""
    orders = rows(panel, 6)
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"][-2:] in ("/1", "/4"), times=2)
    assets = MemoryAssetStores()

    records, error = run(orders, assets)

    assert isinstance(error, OrdersUnresolvedError) and isinstance(error, AirflowFailException)
    assert states(records) == ["placed", "unknown", "placed", "placed", "unknown", "placed"]
    assert "ResolveOrdersOperator(ledger_scope='spring'" in str(error)
    assert "row-1 (service" in str(error) and "https://example.com/p/4" in str(error)
    assert len(panel.state.orders) == 6, "the panel holds all six"
    panel.requests.clear()

    records, error = run(orders, assets)

    assert isinstance(error, OrdersUnresolvedError)
    assert states(records) == ["placed", "unknown", "placed", "placed", "unknown", "placed"]
    assert panel.count("add") == 0
    assert orders_per_link(panel) == Counter(o["link"] for o in orders), "exactly one order per row"


@needs_state_stores
def test_an_other_scope_or_the_default_per_task_ledger_does_not_know_the_keys(panel: SandboxPanel) -> None:
    orders = rows(panel, 2)
    assets = MemoryAssetStores()
    run(orders, assets, scope="spring")

    _, error = run(orders, assets, scope="summer")
    assert error is None and panel.count("add") == 4, "another scope is another campaign"
    _, error = run(orders, assets, scope=None)
    assert error is None and panel.count("add") == 6, "the per-task ledger lives one run"


@needs_state_stores
def test_a_scope_without_an_asset_state_store_sends_nothing(panel: SandboxPanel) -> None:
    _, error = run(rows(panel, 2), None, store=MemoryStateStore())

    assert isinstance(error, MirPanelInputError) and "asset state store" in str(error)
    assert panel.count() == 0


@needs_state_stores
def test_on_unknown_is_templated_and_checked_when_rendered(panel: SandboxPanel) -> None:
    orders = rows(panel, 3)
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"].endswith("/2"))
    assets = MemoryAssetStores()
    run(orders, assets)
    panel.requests.clear()

    template = "{{ dag_run.conf.get('on_unknown', 'fail') }}"
    op = PlaceOrderOperator(task_id="p", orders=orders, on_unknown=template, ledger_scope="spring")
    context: Any = {"task_state_store": MemoryStateStore(), "asset_state_store": assets}
    op.on_unknown = " skip"  # as run conf {"on_unknown": " skip"} renders it, spaces and all
    records = op.execute(context)

    assert states(records) == ["placed", "placed", "skipped"]
    assert panel.count() == 0
    op.on_unknown = "maybe"  # what a bad conf value renders to
    with pytest.raises(MirPanelInputError, match="on_unknown must be one of"):
        op.execute(context)
    assert panel.count() == 0
    with pytest.raises(ValueError, match="on_unknown must be one of"):
        PlaceOrderOperator(task_id="p", orders=orders, on_unknown="maybe")


@needs_state_stores
def test_a_failure_a_retry_could_fix_keeps_airflows_retries(panel: SandboxPanel) -> None:
    """A refusal (e.g. not enough funds, topped up later) or a never-sent order may succeed on a retry."""
    orders = rows(panel, 2)
    panel.faults.add("add", "error", error="Not enough funds on balance", times=1)

    _, error = run(orders, MemoryAssetStores(), max_concurrency=1)

    assert isinstance(error, OrdersNotPlacedError) and not isinstance(error, AirflowFailException)


def test_a_retry_without_any_store_never_resends_blindly(panel: SandboxPanel) -> None:
    orders = rows(panel, 3)

    records, error = run(orders, None, scope=None, try_number=2)

    assert isinstance(error, OrdersUnresolvedError) and states(records) == ["unknown"] * 3
    assert "no task_state_store" in (records or [{}])[0]["error"]
    assert panel.count() == 0
    records, error = run(orders, None, scope=None, try_number=2, on_unknown="resend")
    assert error is None and states(records) == ["placed"] * 3, "unless the user says so"
    records, error = run(orders, None, scope=None, try_number=1)
    assert error is None, "a first try has nothing to account for"


# ---------------------------------------------------------------------------------------------
# Listing and resolving the unknown keys of a scope
# ---------------------------------------------------------------------------------------------


def resolve(assets: MemoryAssetStores, resolutions: Any = None, scope: str = "spring") -> list[dict[str, Any]]:
    op = ResolveOrdersOperator(task_id="resolve", ledger_scope=scope, resolutions=resolutions)
    return op.execute(task_context(asset_state_store=assets))


def lost_two(panel: SandboxPanel, assets: MemoryAssetStores) -> list[dict[str, Any]]:
    """Six rows placed into scope 'spring' while the replies of rows 1 and 4 are lost."""
    orders = rows(panel, 6)
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"][-2:] in ("/1", "/4"), times=2)
    run(orders, assets)
    panel.faults.clear()
    panel.requests.clear()
    return orders


def held_order(panel: SandboxPanel, link: str) -> int:
    [order] = [order.id for order in list(panel.state.orders.values()) if order.link == link]
    return order


@needs_state_stores
def test_the_unknown_keys_of_a_scope_are_listed(panel: SandboxPanel) -> None:
    assets = MemoryAssetStores()
    lost_two(panel, assets)

    listed = resolve(assets)

    assert [(r["key"], r["state"]) for r in listed] == [("row-1", "unknown"), ("row-4", "unknown")]
    assert all(r["error"] and "connection lost" in r["error"] for r in listed)
    assert panel.count() == 0


@needs_state_stores
def test_resolved_keys_are_placed_or_not_by_the_next_run_as_the_user_said(panel: SandboxPanel) -> None:
    assets = MemoryAssetStores()
    orders = lost_two(panel, assets)
    found = held_order(panel, "https://example.com/p/1")
    panel.state.orders.pop(held_order(panel, "https://example.com/p/4"))  # say the panel lost row 4

    resolved = resolve(assets, {"row-1": found, "row-4": "not_placed"})

    assert [(r["key"], r["state"], r["order"]) for r in resolved] == [
        ("row-1", "placed", found),
        ("row-4", "not_placed", None),
    ]
    assert resolve(assets) == [], "nothing left to resolve"
    panel.requests.clear()
    records, error = run(orders, assets)
    assert error is None and states(records) == ["placed"] * 6
    assert (records or [])[1]["order"] == found
    assert panel.count("add") == 1 and orders_per_link(panel) == Counter(o["link"] for o in orders)


@needs_state_stores
def test_a_resolution_the_panel_cannot_confirm_writes_nothing(panel: SandboxPanel) -> None:
    assets = MemoryAssetStores()
    lost_two(panel, assets)

    with pytest.raises(MirPanelInputError, match="the panel does not know these orders: row-1 → 999999999"):
        resolve(assets, '{"row-1": 999999999}')
    with pytest.raises(MirPanelInputError, match="no entry in ledger scope 'spring'"):
        resolve(assets, {"row-9": "not_placed"})
    with pytest.raises(MirPanelInputError, match="must be an order ID or 'not_placed'"):
        resolve(assets, {"row-1": "yes"})

    assert [r["key"] for r in resolve(assets)] == ["row-1", "row-4"]


def test_a_placed_key_cannot_be_resolved_to_another_order() -> None:
    ledger = PlacementLedger(MemoryStateStore(), scope="s")
    ledger.append({"k": LedgerEntry(LedgerState.PLACED, "d", 1001)})

    with pytest.raises(MirPanelInputError, match="already recorded as order 1001"):
        ledger.resolve({"k": 2002})
    assert ledger.resolve({"k": 1001})["k"].state is LedgerState.PLACED


def test_scoped_pages_are_namespaced_and_safe_for_any_scope_name() -> None:
    store = MemoryStateStore()
    PlacementLedger(store, scope="a.b c").append({"k": LedgerEntry(LedgerState.SENDING, "d")})
    PlacementLedger(store, scope="a").append({"b c/k": LedgerEntry(LedgerState.SENDING, "d")})

    assert sorted(store.values) == ["mirpanel.ledger.a.0", "mirpanel.ledger.a.b%20c.0"]
    assert list(PlacementLedger(store, scope="a").load()) == ["b c/k"]
    assert list(PlacementLedger(store, scope="a.b c").load()) == ["k"]
    with pytest.raises(MirPanelInputError, match="ledger_scope must be text"):
        PlacementLedger.from_context({"asset_state_store": MemoryAssetStores()}, scope=" ", asset=ledger_asset("x"))


@needs_state_stores
def test_a_killed_try_is_listed_at_once(panel: SandboxPanel) -> None:
    """A try that died between marking its orders and their replies left them 'sending': listed, not resent."""
    orders = rows(panel, 2)
    assets = MemoryAssetStores()
    from airflow_provider_mirpanel.placement.order_rows import order_specs

    ledger = PlacementLedger(assets[ledger_asset("mirpanel_default")], scope="spring")
    ledger.append({"row-1": LedgerEntry(LedgerState.SENDING, order_specs(orders)[1].digest)})
    assert [(r["key"], r["state"]) for r in resolve(assets)] == [("row-1", "sending")]

    records, error = run(orders, assets)

    assert isinstance(error, OrdersUnresolvedError) and states(records) == ["placed", "unknown"]
    assert panel.count("add") == 1


@pytest.mark.skipif(STATE_STORES, reason="Airflow 3.3 has the asset state store")
def test_below_airflow_3_3_a_ledger_scope_is_refused_when_the_dag_is_parsed() -> None:
    for make in (
        lambda: PlaceOrderOperator(task_id="p", orders=[{"service": 1}], ledger_scope="spring"),
        lambda: ResolveOrdersOperator(task_id="r", ledger_scope="spring"),
    ):
        with pytest.raises(ValueError, match=r"needs Airflow 3\.3 or later"):
            make()
    PlaceOrderOperator(task_id="p", orders=[{"service": 1}])  # the per-task ledger works on every line
