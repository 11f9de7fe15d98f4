"""Hourly order status ETL: a status snapshot of every open order, appended to a history table.

::

    find_open_orders ── snapshot (mapped: one task per batch of order IDs) ── store_snapshot

1. ``find_open_orders`` reads the IDs of the orders in the ``orders`` table that are not finished
   (never checked, or Pending / In progress / Processing) and splits them into batches of
   ``batch_size``. No open orders: the run is skipped.
2. ``snapshot`` is an ``OrderStatusOperator`` mapped over the batches (dynamic task mapping):
   each mapped task asks the panel about its batch, 100 IDs per request; at most
   ``max_active_tis_per_dagrun`` batches run at once, so a big backlog spreads over the workers.
3. ``store_snapshot`` writes every status to ``order_status_history`` keyed by (order, the run's
   data interval end; for a manual run, which has none, the time it was triggered) and updates
   the orders' latest status in ``orders``, in one transaction that first deletes the interval's
   earlier rows: re-running an interval (a retry, a clear, a backfill) replaces its snapshot
   instead of adding a second one.

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

from airflow_provider_mirpanel.operators.mirpanel import OrderStatusOperator

log = logging.getLogger(__name__)


with DAG(
    dag_id="mirpanel_status_etl",
    description="Snapshot the status of every open order into order_status_history, hourly",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["mirpanel", "example", "etl"],
    default_args={"retries": 3, "retry_delay": timedelta(minutes=2)},
    params={
        "batch_size": Param(
            1000,
            type="integer",
            minimum=1,
            maximum=100_000,
            description="Order IDs per mapped snapshot task (each asks 100 per request)",
        ),
        "max_orders": Param(
            100_000, type="integer", minimum=1, description="At most this many open orders per run (the oldest first)"
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def find_open_orders(params: dict[str, Any]) -> list[list[int]]:
        """The open orders' IDs, in batches of ``batch_size``."""
        ids = warehouse.open_order_ids(warehouse.get_engine(), limit=params["max_orders"])
        if not ids:
            raise AirflowSkipException("no open orders in the orders table")
        size = params["batch_size"]
        batches = [ids[start : start + size] for start in range(0, len(ids), size)]
        log.info("%d open orders in %d batches of up to %d", len(ids), len(batches), size)
        return batches

    # One mapped task instance per batch; each is an ordinary OrderStatusOperator returning records.
    snapshot = OrderStatusOperator.partial(
        task_id="snapshot",
        max_active_tis_per_dagrun=4,  # batches in flight at once: keep the panel's rate limit in mind
    ).expand(order_ids=find_open_orders())

    @task
    def store_snapshot(batches: list[list[dict[str, Any]]], run_id: str, **context: Any) -> dict[str, Any]:
        """Replace this interval's rows of order_status_history with the snapshot; update orders."""
        # The mapped tasks' XComs, read in one request ([:] — iterating would ask for them one by one).
        records = [record for batch in batches[:] for record in batch]
        taken_at = warehouse.run_time(context)
        replaced, inserted = warehouse.replace_snapshot(warehouse.get_engine(), taken_at, records, run_id)
        statuses = Counter(str(record["status"]) for record in records if not record.get("error"))
        errors = sum(1 for record in records if record.get("error"))
        log.info(
            "snapshot %s: %d orders stored (%d rows of an earlier run of this interval replaced); statuses: %s%s",
            taken_at.isoformat(),
            inserted,
            replaced,
            dict(statuses),
            f"; {errors} unknown to the panel" if errors else "",
        )
        return {
            "snapshot_at": taken_at.isoformat(),
            "orders": inserted,
            "replaced": replaced,
            "statuses": dict(statuses),
        }

    store_snapshot(snapshot.output)
