"""A small DAG using every MirPanel operator and sensor; tests/integration/test_dag_run.py runs it with dag.test().

The test points ``mirpanel_default`` at a sandbox panel and ``MIRPANEL_TEST_OUTPUT`` at a file
where the last task writes every task's XCom value (and the dtypes to_dataframe gives them).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_mirpanel.operators.mirpanel import (
    BalanceCheckOperator,
    CancelOrdersOperator,
    OrderStatusOperator,
    PlaceOrderOperator,
    RefillOperator,
    ServicesOperator,
)
from airflow_provider_mirpanel.records import to_dataframe
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor, RefillStatusSensor

TASKS = ("balance", "services", "place", "wait_orders", "status", "refill", "wait_refills", "cancel")

with DAG(
    dag_id="mirpanel_provider_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retry_delay": timedelta(seconds=0)},
) as dag:
    balance = BalanceCheckOperator(task_id="balance", min_balance=10)
    services = ServicesOperator(task_id="services", category="instagram", service_type="Default")

    @task
    def campaign(catalogue: Any) -> list[dict[str, Any]]:  # the services task's records (an XComArg here)
        """Three orders of the first refillable service: a campaign table's rows."""
        service = next(s for s in catalogue if s["refill"])
        return [
            {"service": service["service"], "link": f"https://example.com/dag/{i}", "quantity": service["min"]}
            for i in range(3)
        ]

    place = PlaceOrderOperator(task_id="place", orders=campaign(services.output), check_balance=True, retries=1)

    @task
    def order_ids(records: Any) -> list[int]:  # the placement's records (an XComArg here)
        return [record["order"] for record in records]

    ids = order_ids(place.output)
    wait_orders = OrderStatusSensor(
        task_id="wait_orders", order_ids=ids, mode="reschedule", poke_interval=1, timeout=120
    )
    status = OrderStatusOperator(task_id="status", order_ids="{{ ti.xcom_pull(task_ids='order_ids') }}")
    refill = RefillOperator(task_id="refill", order_ids=ids)
    wait_refills = RefillStatusSensor(
        task_id="wait_refills",
        refill_ids="{{ ti.xcom_pull(task_ids='refill') | map(attribute='refill') | list }}",
        poke_interval=0.2,
        timeout=120,
    )
    cancel = CancelOrdersOperator(task_id="cancel", order_ids=ids)

    @task
    def collect(**context: Any) -> None:
        """Write every task's XCom value and its DataFrame dtypes where the test reads them."""
        ti = context["ti"]
        out: dict[str, Any] = {}
        for task_id in TASKS:
            value = ti.xcom_pull(task_ids=task_id)
            out[task_id] = {"value": value, "dtypes": to_dataframe(value).dtypes.astype(str).to_dict()}
        with open(os.environ["MIRPANEL_TEST_OUTPUT"], "w") as file:
            json.dump(out, file)

    balance >> place
    wait_orders >> status >> refill >> wait_refills >> cancel >> collect()
