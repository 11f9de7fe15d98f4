"""The DAG of ``python -m benchmarks --deployment``: PlaceOrderOperator placing N orders, with or without a ledger.

Run by a real scheduler (``benchmarks/deployed.py`` starts the deployment of ``make e2e`` with this
folder as its DAGs folder). The run's conf says how many orders (``n``, distinct links), of which
service and quantity, and whether the task's ``task_state_store`` is handed to the operator
(``ledger``: the exactly-once ledger writes its pages there) or left out of the context (no state
store: an in-memory ledger, which is what placement costs without the safety net).

The task measures ``execute`` itself and pushes a small summary as the XCom ``bench`` (the records
are not returned, so both variants skip the same 3,000-record XCom). With the ledger it then times
20 writes and 20 reads of one small value in the real store: the per-trip cost the in-process
benchmark models.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from airflow.sdk import DAG, Param

from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator

#: Trips timed per direction when measuring the state store.
TRIPS = 20


class BenchPlaceOrderOperator(PlaceOrderOperator):
    """Builds its orders from the run's conf, hides the state store when ``ledger`` is false, times ``execute``."""

    def execute(self, context: Any) -> Any:
        params = context["params"]
        n, ledger = int(params["n"]), bool(params["ledger"])
        self.orders = [
            {
                "service": params["service"],
                "link": f"https://example.com/bench/{context['run_id']}/{i}",
                "quantity": params["quantity"],
            }
            for i in range(n)
        ]
        store = context.get("task_state_store")
        inner: Any = context if ledger else {key: value for key, value in context.items() if key != "task_state_store"}
        started = time.perf_counter()
        records = super().execute(inner)
        wall = time.perf_counter() - started
        summary: dict[str, Any] = {
            "n": n,
            "ledger": ledger,
            "wall": wall,
            "placed": sum(1 for record in records if record["state"] == "placed"),
        }
        if ledger and store is not None:
            summary.update(trips(store))
        context["ti"].xcom_push(key="bench", value=summary)
        return {"placed": summary["placed"], "wall": wall}


def trips(store: Any) -> dict[str, float]:
    """Median seconds of one ``set`` and one ``get`` of a small value in the task's state store."""
    sets, gets = [], []
    for index in range(TRIPS):
        started = time.perf_counter()
        store.set("mirpanel.bench.trip", {"index": index, "pad": "x" * 100})
        sets.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.get("mirpanel.bench.trip")
        gets.append(time.perf_counter() - started)
    return {"set_trip": statistics.median(sets), "get_trip": statistics.median(gets)}


with DAG(
    dag_id="mirpanel_bench_place",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params={
        "n": Param(3000, type="integer"),
        "ledger": Param(True, type="boolean"),
        "service": Param(1, type="integer"),
        "quantity": Param(100, type="integer"),
    },
    tags=["mirpanel", "benchmark"],
):
    BenchPlaceOrderOperator(task_id="place", orders=[], retries=0)
