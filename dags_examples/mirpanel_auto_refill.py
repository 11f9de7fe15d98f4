"""Daily auto refill: ask for a refill of finished orders of refill-enabled services, and record the outcome.

::

    find_candidates ── request_refills ── record_requests ── wait_for_refills ── record_outcome

1. ``find_candidates`` picks from the ``orders`` table the Completed or Partial orders of services
   that offer refills (the flag stored when the order was placed), placed within the refill
   guarantee (``guarantee_days``) and without a refill requested in the last ``cooldown_days``.
2. ``request_refills`` (``RefillOperator``) asks the panel for a refill of each; the panel's
   refusals ("Order not eligible for refill") are data, not failures.
3. ``record_requests`` writes every request to the ``refills`` table at once, so the next run's
   cooldown sees it even if the wait below fails.
4. ``wait_for_refills`` (``RefillStatusSensor``, deferred to the triggerer) waits until every refill
   is Completed, Rejected, Canceled or Error; ``record_outcome`` stores the final statuses.

Connections: ``mirpanel_default`` (the panel) and ``mirpanel_warehouse`` (the database).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import DAG, Param, task
from mirpanel_examples import warehouse

from airflow_provider_mirpanel.operators.mirpanel import RefillOperator
from airflow_provider_mirpanel.sensors.mirpanel import RefillStatusSensor

log = logging.getLogger(__name__)


with DAG(
    dag_id="mirpanel_auto_refill",
    description="Request refills of finished orders of refill-enabled services, daily",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["mirpanel", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "cooldown_days": Param(
            7, type="integer", minimum=0, description="Skip orders with a refill requested in the last N days"
        ),
        "guarantee_days": Param(
            30, type="integer", minimum=1, description="Only orders placed in the last N days (the refill guarantee)"
        ),
        "max_orders": Param(1000, type="integer", minimum=1, description="At most this many refills per run"),
    },
    doc_md=__doc__,
) as dag:

    @task
    def find_candidates(params: dict[str, Any], **context: Any) -> list[int]:
        """Finished orders of refill-enabled services without a recent refill."""
        ids = warehouse.refill_candidates(
            warehouse.get_engine(),
            cooldown=timedelta(days=params["cooldown_days"]),
            guarantee=timedelta(days=params["guarantee_days"]),
            limit=params["max_orders"],
            as_of=warehouse.run_time(context),
        )
        if not ids:
            raise AirflowSkipException("no order needs a refill")
        log.info("%d orders to refill: %s", len(ids), ids)
        return ids

    refill = RefillOperator(task_id="request_refills", order_ids=find_candidates())

    @task
    def record_requests(requests: list[dict[str, Any]], run_id: str, **context: Any) -> list[int]:
        """Store the refill requests (IDs and refusals); return the refill IDs to wait for."""
        warehouse.record_refill_requests(warehouse.get_engine(), warehouse.run_time(context), requests, run_id)
        refill_ids = [record["refill"] for record in requests if record.get("refill")]
        refused = len(requests) - len(refill_ids)
        log.info("%d refills requested, %d refused by the panel", len(refill_ids), refused)
        if not refill_ids:
            raise AirflowSkipException("the panel refused every refill")
        return refill_ids

    wait = RefillStatusSensor(
        task_id="wait_for_refills",
        refill_ids=record_requests(refill.output),
        deferrable=True,  # waits in the triggerer; deferrable=False falls back to reschedule mode
        mode="reschedule",
        poke_interval=warehouse.POKE_INTERVAL,
        timeout=timedelta(hours=20),  # before the next daily run
    )

    @task
    def record_outcome(statuses: list[dict[str, Any]]) -> dict[str, int]:
        """Store each refill's final status."""
        warehouse.update_refills(warehouse.get_engine(), statuses)
        outcome = dict(Counter(str(record["status"]) for record in statuses))
        log.info("refills finished: %s", outcome)
        return outcome

    record_outcome(wait.output)
