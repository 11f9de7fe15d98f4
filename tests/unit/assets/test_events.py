"""Data-aware campaigns: the asset events of a campaign carry a summary of its records in ``extra``."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import Asset
from airflow.sdk.execution_time.context import OutletEventAccessors
from support.task_context import task_context

from airflow_provider_mirpanel.assets.events import CampaignAssetEvent, campaign_summary
from airflow_provider_mirpanel.operators.mirpanel import OrderStatusOperator, PlaceOrderOperator
from airflow_provider_mirpanel.sandbox import SandboxPanel

PLACED = Asset("campaign_placed")
FINISHED = Asset("campaign_finished")
ROWS = [
    {"key": f"row-{n}", "service": 8094, "link": f"https://instagram.com/p/{n}", "quantity": 1000} for n in range(3)
]


def emit(hook: CampaignAssetEvent, operator: Any, result: Any) -> dict[str, Any]:
    """Run ``hook`` as Airflow runs a ``post_execute`` hook; the extra of the outlet's event."""
    events = OutletEventAccessors()
    hook(task_context(task=operator, outlet_events=events, params={"campaign": "spring"}), result)
    return dict(events[operator.outlets[0]].extra)


def test_placed_and_finished_events_summarise_counts_spend_and_statuses(panel: SandboxPanel) -> None:
    place = PlaceOrderOperator(
        task_id="place",
        orders=ROWS,
        outlets=[PLACED],
        post_execute=CampaignAssetEvent("placed", "{{ params.campaign }}"),
    )
    placed = place.execute(task_context())
    extra = emit(CampaignAssetEvent("placed", "{{ params.campaign }}"), place, placed)
    cost = sum(record["cost"] for record in placed)
    assert extra == {
        "stage": "placed",
        "campaign": "spring",
        "orders": 3,
        "states": {"placed": 3},
        "spend": pytest.approx(cost),
    }

    panel.complete_all()
    status = OrderStatusOperator(task_id="wait", order_ids=[record["order"] for record in placed], outlets=[FINISHED])
    final = status.execute(task_context())
    extra = emit(CampaignAssetEvent("finished", "{{ params.campaign }}"), status, final)
    assert extra["stage"] == "finished" and extra["orders"] == 3 and sum(extra["statuses"].values()) == 3
    assert extra["spend"] == pytest.approx(sum(record["charge"] or 0 for record in final))
    assert panel.count("add") == 3 and panel.count("status") == 1  # the summary asks the panel nothing


def test_the_summary_is_small_for_any_number_of_orders() -> None:
    records = [{"order": n, "status": "Completed", "charge": 0.01, "remains": 0} for n in range(10_000)]
    summary = campaign_summary(records, "finished", "big")
    assert summary == {
        "stage": "finished",
        "campaign": "big",
        "orders": 10_000,
        "statuses": {"Completed": 10_000},
        "spend": pytest.approx(100.0),
        "remains": 0,
    }
    with pytest.raises(ValueError, match="stage must be one of"):
        CampaignAssetEvent("started")
