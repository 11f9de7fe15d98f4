"""One placement with a retry; tests/integration/test_retry_lines.py runs it with ``airflow dags test``
on each Airflow line.

``MIRPANEL_TEST_ORDERS`` holds the orders (JSON), so the DAG file needs no panel to be parsed.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator

with DAG(
    dag_id="mirpanel_retry_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retry_delay": timedelta(seconds=0)},
):
    PlaceOrderOperator(task_id="place", orders=json.loads(os.environ.get("MIRPANEL_TEST_ORDERS", "[]")), retries=1)
