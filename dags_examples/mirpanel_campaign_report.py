"""Campaign report, data-aware: runs when a campaign's orders have all finished.

Scheduled on the asset ``mirpanel_campaign_finished``, to which ``mirpanel_campaign``'s
``wait_for_orders`` gives an event when every order has ended. The event's ``extra`` already
summarises the campaign (``campaign, orders, statuses, spend, remains``): this DAG logs it; put a
reconciliation against your books or a message to the campaign's owner here instead.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task
from mirpanel_examples.campaign_assets import CAMPAIGN_FINISHED

from airflow_provider_mirpanel.assets.events import run_events

log = logging.getLogger(__name__)


def finished_campaigns(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The summaries of this run's asset events (a run by hand: of the asset's latest event)."""
    return [dict(event.extra) for event in run_events(context, CAMPAIGN_FINISHED)]


with DAG(
    dag_id="mirpanel_campaign_report",
    description="Report a campaign once all its orders have finished (scheduled on its asset)",
    schedule=[CAMPAIGN_FINISHED],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["mirpanel", "example"],
    doc_md=__doc__,
) as dag:

    @task(inlets=[CAMPAIGN_FINISHED])
    def report(**context: Any) -> list[dict[str, Any]]:
        """One line per finished campaign: orders, statuses, spend, undelivered units."""
        summaries = finished_campaigns(context)
        for summary in summaries:
            log.info(
                "campaign %r finished: %s orders, statuses %s, spend %s, %s units not delivered",
                summary.get("campaign"),
                summary.get("orders"),
                summary.get("statuses"),
                summary.get("spend"),
                summary.get("remains"),
            )
        return summaries

    report()
