"""Mapped placement into one ledger scope; tests/test_mapped_scope.py runs it with ``airflow dags test``.

The run conf holds the rows (``{"rows": [...], "scope": "..."}``), so the DAG file needs no panel to be
parsed; the rows are placed in chunks of 10 by mapped instances of one ``PlaceOrderOperator``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator

with DAG(
    dag_id="mirpanel_mapped_scope_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"rows": [], "scope": "mapped"},
):

    @task
    def chunks(params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        rows = list((params or {})["rows"])
        return [rows[start : start + 10] for start in range(0, len(rows), 10)]

    PlaceOrderOperator.partial(task_id="place", ledger_scope="{{ params.scope }}", ledger_wait_poll=1).expand(
        orders=chunks()
    )
