"""What the MirPanel page reads that the provider writes for it: the campaign event's ``ledger_scope`` and the
placement's XCom of orders of unknown outcome; and how an event is matched to a campaign."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset
from airflow.sdk.execution_time.context import OutletEventAccessors
from support.airflow_compat import needs_state_stores
from support.stores import MemoryAssetStores
from support.task_context import task_context

from airflow_provider_mirpanel.assets.events import CampaignAssetEvent
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator
from airflow_provider_mirpanel.operators.orders import UNKNOWN_ORDERS_XCOM_KEY
from airflow_provider_mirpanel.plugins.gather import event_scope
from airflow_provider_mirpanel.sandbox import SandboxPanel

PLACED = Asset("ui_placed")


class RecordingTI:
    try_number = 1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def rows(panel: SandboxPanel, n: int) -> list[dict[str, Any]]:
    service = next(s for s in panel.catalogue.services if s.get("type") == "Default")
    return [
        {"key": f"k{i}", "service": service["service"], "link": f"https://ig.example/p/{i}", "quantity": service["min"]}
        for i in range(n)
    ]


@needs_state_stores
def test_a_scoped_placement_leaves_its_unknown_orders_service_and_link(panel: SandboxPanel) -> None:
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"].endswith("/1"))
    ti = RecordingTI()
    op = PlaceOrderOperator(task_id="p", orders=rows(panel, 3), ledger_scope="bf", mirpanel_conn_id="mirpanel_default")
    try:
        op.execute(task_context(ti=ti, asset_state_store=MemoryAssetStores()))
    except Exception as error:
        assert "unknown" in str(error)
    assert ti.xcom[UNKNOWN_ORDERS_XCOM_KEY] == {
        "ledger_scope": "bf",
        "mirpanel_conn_id": "mirpanel_default",
        "orders": [{"key": "k1", "service": rows(panel, 1)[0]["service"], "link": "https://ig.example/p/1"}],
    }


def test_no_unknown_orders_or_no_scope_leaves_no_such_xcom(panel: SandboxPanel) -> None:
    ti = RecordingTI()
    PlaceOrderOperator(task_id="p", orders=rows(panel, 2)).execute(task_context(ti=ti))
    assert UNKNOWN_ORDERS_XCOM_KEY not in ti.xcom


@needs_state_stores
def test_a_placed_event_names_its_scope_and_connection(panel: SandboxPanel) -> None:
    op = PlaceOrderOperator(
        task_id="p",
        orders=rows(panel, 2),
        ledger_scope="black_friday",
        outlets=[PLACED],
        mirpanel_conn_id="mirpanel_default",
    )
    records = op.execute(task_context(ti=RecordingTI(), asset_state_store=MemoryAssetStores()))
    events = OutletEventAccessors()
    CampaignAssetEvent("placed", "{{ params.campaign }}")(
        task_context(task=op, outlet_events=events, params={"campaign": "BF 2026"}), records
    )
    extra = dict(events[PLACED].extra)
    assert extra["campaign"] == "BF 2026" and extra["ledger_scope"] == "black_friday"
    assert extra["mirpanel_conn_id"] == "mirpanel_default"
    assert event_scope(extra) == ("mirpanel_default", "black_friday")  # the scope wins over the campaign text


def test_events_match_by_ledger_scope_else_campaign() -> None:
    assert event_scope({"stage": "finished", "campaign": "spring"}) == (None, "spring")
    assert event_scope({"stage": "placed", "campaign": "x", "ledger_scope": "s", "mirpanel_conn_id": "c"}) == ("c", "s")
    extras: list[dict[str, Any]] = [
        {"campaign": "spring"},
        {"stage": "started", "campaign": "s"},
        {"stage": "placed"},
        {"stage": "placed", "campaign": ""},
        {"stage": "placed", "campaign": 7},
        {"payload": {}},
    ]
    for extra in extras:
        assert event_scope(extra) is None, extra
