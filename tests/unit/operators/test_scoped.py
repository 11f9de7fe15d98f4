"""Issue 20: concurrent writers of a ledger scope, through the operators, against the sandbox panel.

The sandbox's own order list is the evidence: each row bought once, every outcome in the ledger.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from support.airflow_compat import needs_state_stores
from support.lease_clock import SkippingClock
from support.leases import (
    KEY,
    OWNER_B,
    TI,
    context,
    hold,
    per_link,
    release,
    rows,
)
from support.stores import MemoryAssetStores

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator, ResolveOrdersOperator
from airflow_provider_mirpanel.operators.scoped import LEDGER_CLAIM_XCOM_KEY, MirPanelScopeBusyError
from airflow_provider_mirpanel.placement import lease as lease_module
from airflow_provider_mirpanel.placement.lease import Lease, LeaseOwner, LeaseTiming
from airflow_provider_mirpanel.placement.ledger import PlacementLedger, ledger_asset
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.triggers.scope import LedgerScopeTrigger
from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore
from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore
from airflow_provider_mirpanel.version_compat import TaskDeferred


@needs_state_stores
def test_a_writer_that_finds_the_scope_held_defers_sends_nothing_and_places_once_it_is_free(
    panel: SandboxPanel,
) -> None:
    orders, assets = rows(panel, 5), MemoryAssetStores()
    hold(assets, OWNER_B)
    op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring", ledger_wait_poll=20)
    ti = TI()

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(assets, ti))

    assert panel.count() == 0, "nothing asked while the scope is held"
    assert deferred.value.method_name == "execute_after_wait"
    trigger = deferred.value.trigger
    assert isinstance(trigger, LedgerScopeTrigger)
    assert trigger.serialize() == (
        "airflow_provider_mirpanel.triggers.scope.LedgerScopeTrigger",
        {
            "asset_name": "mirpanel_order_ledger__mirpanel_default",
            "lease_key": KEY,
            "owner": {"dag_id": "campaign", "run_id": "run_a", "task_id": "place", "map_index": -1},
            "poll_interval": 20.0,
            "skew": 5.0,
            "give_up_at": pytest.approx(trigger.give_up_at),
            "try_number": 1,
        },
    )
    assert trigger.give_up_at is not None
    wait = (deferred.value.kwargs or {})["scope_wait"]
    assert trigger.give_up_at == pytest.approx(wait["since"] + 24 * 3600)
    assert wait["polls"] == 1 and "run 'run_b'" in wait["holders"][0]

    release(assets)
    records = op.execute_after_wait(context(assets, ti), event=None, scope_wait=wait)

    assert [r["state"] for r in records] == ["placed"] * 5
    assert per_link(panel) == Counter(o["link"] for o in orders)
    claim = ti.xcom[LEDGER_CLAIM_XCOM_KEY]
    assert claim["scope"] == "spring" and claim["polls"] == 1 and claim["holders"] == wait["holders"]
    assert claim["claim"] == LeaseTiming().claim_wait
    lease = Lease.from_json(assets[ledger_asset("mirpanel_default")].get(KEY))
    assert lease is not None and lease.owner == LeaseOwner("campaign", "run_a", "place") and lease.released_at


@needs_state_stores
def test_a_writer_gives_up_after_the_wait_timeout_naming_the_holder(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = MemoryAssetStores()
    holder = LeaseOwner("other_dag", "manual__1", "place", 3)

    class Renewing(SkippingClock):  # the holder renews its lease while the writer waits
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            hold(assets, holder)

    monkeypatch.setattr(lease_module, "DEFAULT_CLOCK", Renewing())
    hold(assets, holder)
    op = PlaceOrderOperator(
        task_id="place",
        orders=rows(panel, 2),
        ledger_scope="spring",
        deferrable=False,
        ledger_wait_poll=60,
        ledger_wait_timeout=timedelta(minutes=5),
    )

    with pytest.raises(MirPanelScopeBusyError) as error:
        op.execute(context(assets, TI()))

    assert "DAG 'other_dag', run 'manual__1', task 'place', map index 3" in str(error.value)
    assert "nothing was sent" in str(error.value)
    assert panel.count() == 0


@needs_state_stores
def test_the_holders_retry_takes_its_scope_back_without_waiting(panel: SandboxPanel) -> None:
    orders, assets = rows(panel, 3), MemoryAssetStores()
    hold(assets, LeaseOwner("campaign", "run_a", "place", -1))  # try 1 was killed holding it

    ti = TI(try_number=2)
    records = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring").execute(context(assets, ti))

    assert [r["state"] for r in records] == ["placed"] * 3
    assert ti.xcom[LEDGER_CLAIM_XCOM_KEY]["polls"] == 0


@needs_state_stores
def test_two_runs_placing_one_campaign_at_once_buy_each_row_once_and_lose_no_entry(
    panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real threads, real waiting: whichever claims first places; the other waits, then finds all placed."""
    monkeypatch.setattr(lease_module, "DEFAULT_CLOCK", lease_module.SystemLeaseClock())
    orders, assets = rows(panel, 40), MemoryAssetStores()
    results: dict[str, Any] = {}

    def place(run_id: str) -> None:
        op = PlaceOrderOperator(
            task_id="place", orders=orders, ledger_scope="spring", deferrable=False, ledger_wait_poll=0.2
        )
        try:
            results[run_id] = op.execute(context(assets, TI(run_id=run_id)))
        except Exception as error:  # reported below
            results[run_id] = error

    threads = [threading.Thread(target=place, args=(run_id,)) for run_id in ("run_a", "run_b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert all(isinstance(result, list) for result in results.values()), results
    assert per_link(panel) == Counter(o["link"] for o in orders), "each row bought exactly once"
    for records in results.values():
        assert [r["state"] for r in records] == ["placed"] * 40
    held = {order.link: order_id for order_id, order in panel.state.orders.items()}
    ledger = PlacementLedger(assets[ledger_asset("mirpanel_default")], scope="spring")
    entries = ledger.load()
    assert {o["key"]: entries[o["key"]].order for o in orders} == {o["key"]: held[o["link"]] for o in orders}, (
        "no ledger entry lost"
    )


@needs_state_stores
def test_a_mapped_placement_needs_a_key_in_every_row(panel: SandboxPanel) -> None:
    orders = [{k: v for k, v in row.items() if k != "key"} for row in rows(panel, 3)]
    op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring")

    with pytest.raises(MirPanelInputError, match="rows 0, 1, 2 have no 'key'"):
        op.execute(context(MemoryAssetStores(), TI(map_index=1)))
    assert panel.count() == 0


@needs_state_stores
def test_mapped_placement_has_the_ledger_asset_among_its_inlets_from_parse_time() -> None:
    from airflow.sdk import DAG

    with DAG("mapped_campaign", schedule=None):
        mapped = PlaceOrderOperator.partial(task_id="place", ledger_scope="spring", mirpanel_conn_id="panel_b").expand(
            orders=[[], []]
        )
        by_kwargs = PlaceOrderOperator.partial(task_id="place_kwargs").expand_kwargs(
            [{"orders": [], "ledger_scope": "spring"}]
        )
        unscoped = PlaceOrderOperator.partial(task_id="unscoped", ledger_scope=None).expand(orders=[[]])

    assert ledger_asset("panel_b") in mapped.partial_kwargs["inlets"]
    assert ledger_asset("mirpanel_default") in by_kwargs.partial_kwargs["inlets"]
    assert unscoped.partial_kwargs["inlets"] == []


@needs_state_stores
def test_a_scope_whose_ledger_asset_is_not_an_inlet_is_refused_with_the_fix(panel: SandboxPanel) -> None:
    """A mapped mirpanel_conn_id: the task's inlets name another connection's ledger asset."""

    class Stores(MemoryAssetStores):
        def __getitem__(self, asset: Any) -> MemoryStateStore:
            raise KeyError(f"{asset!r} is not in this task's inlets or outlets")

    op = PlaceOrderOperator(task_id="place", orders=rows(panel, 1), ledger_scope="spring")
    with pytest.raises(MirPanelInputError, match=r"give\s+mirpanel_conn_id .* to partial\(\)"):
        op.execute(context(Stores(), TI(map_index=0)))
    assert panel.count() == 0


@needs_state_stores
def test_a_templated_connection_under_a_scope_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="plain connection ID"):
        PlaceOrderOperator(task_id="place", orders=[], ledger_scope="spring", mirpanel_conn_id="{{ params.conn }}")
    with pytest.raises(ValueError, match="ledger_lease"):
        PlaceOrderOperator(task_id="place", orders=[], ledger_scope="spring", ledger_lease=-1)


@needs_state_stores
def test_resolving_waits_for_a_placement_that_holds_the_scope(panel: SandboxPanel) -> None:
    assets = MemoryAssetStores()
    hold(assets, OWNER_B)
    op = ResolveOrdersOperator(task_id="resolve", ledger_scope="spring", resolutions={"row-1": "not_placed"})

    with pytest.raises(TaskDeferred):
        op.execute(context(assets, TI()))
    assert panel.count() == 0


@needs_state_stores
def test_the_placement_reads_its_ledger_and_the_catalogue_while_the_claim_waits_to_verify(panel: SandboxPanel) -> None:
    """The claim's wait is not idle: the ledger and the catalogue are read before the verify; marks come after."""
    orders, assets, events = rows(panel, 3), MemoryAssetStores(), []

    class Recording(InProcessStateStore):
        def get(self, key: str, default: Any = None) -> Any:
            events.append(f"get {key.rsplit('.', 1)[-1]}")
            return super().get(key, default)

        def set(self, key: str, value: Any) -> None:
            events.append(f"set {key.rsplit('.', 1)[-1]}")
            super().set(key, value)

    assets.stores[ledger_asset("mirpanel_default").name] = Recording()
    op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring")
    services = op.hook.get_services

    def recorded_services() -> Any:
        events.append("services")
        return services()

    op.hook.get_services = recorded_services  # type: ignore[method-assign]

    records = op.execute(context(assets, TI()))

    assert [record["state"] for record in records] == ["placed"] * 3 and panel.count("add") == 3
    assert events[:6] == ["get lease", "set lease", "get 0", "services", "get lease", "set 0"], (
        "claim: read, write; meanwhile: the ledger (no page 0 yet) and the catalogue; verify; then the marks"
    )
