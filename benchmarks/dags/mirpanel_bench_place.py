"""The DAG of ``python -m benchmarks --deployment``: PlaceOrderOperator placing N orders, with or without a ledger.

Run by a real scheduler (``benchmarks/deployed.py`` starts the deployment of ``make e2e`` with this
folder as its DAGs folder). The run's conf says how many orders (``n``, distinct links: each run
places its own rows), of which service and quantity, and where the ledger lives (``store``):

* ``none``: the task's ``task_state_store`` is left out of the context and there is no scope — an
  in-memory ledger, which is what placement costs without the safety net;
* ``task``: the per-task-instance ledger in the real ``task_state_store``;
* ``scope``: the ledger scope ``scope`` in the ledger asset's state store, claimed with its lease
  first (the claim is part of the time measured). Writers of one scope may run at once (up to four
  runs): the others wait deferred, looking again every ``ledger_wait_poll`` seconds (the default, 15).

The task measures the placement itself (claim included; not the waits for a held scope) and pushes
a small summary as the XCom ``bench`` (the records are not returned, so every variant skips the
same 3,000-record XCom). With the task's store (and with a scope, the ledger asset's store) it then
times 20 writes and 20 reads of one small value in the real store: the per-trip cost the in-process
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
STORES = ("none", "task", "scope")


class BenchPlaceOrderOperator(PlaceOrderOperator):
    """Builds its orders from the run's conf, picks the ledger's store, times the placement."""

    def run_scoped(self, context: Any, wait: Any) -> Any:
        params = context["params"]
        n, store = int(params["n"]), str(params["store"])
        run_id = context["run_id"]
        # keys of their own: writers of one scope place different rows (a position key would repeat)
        self.orders = [
            {
                "key": f"{run_id}/{i}",
                "service": params["service"],
                "link": f"https://example.com/bench/{run_id}/{i}",
                "quantity": params["quantity"],
            }
            for i in range(n)
        ]
        if store != "scope":
            self.ledger_scope = None
        task_store = context.get("task_state_store")
        inner: Any = (
            context if store != "none" else {key: value for key, value in context.items() if key != "task_state_store"}
        )
        started = time.perf_counter()
        records = super().run_scoped(inner, wait)
        wall = time.perf_counter() - started
        summary: dict[str, Any] = {
            "n": n,
            "store": store,
            "wall": wall,
            "placed": sum(1 for record in records if record["state"] == "placed"),
        }
        if store == "task" and task_store is not None:
            summary.update(trips(task_store))
        if store == "scope" and self.ledger_asset is not None and "asset_state_store" in context:
            summary.update(trips(context["asset_state_store"][self.ledger_asset]))
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
    store.delete("mirpanel.bench.trip")
    return {"set_trip": statistics.median(sets), "get_trip": statistics.median(gets)}


with DAG(
    dag_id="mirpanel_bench_place",
    schedule=None,
    catchup=False,
    max_active_runs=4,  # the concurrent writers of one scope
    params={
        "n": Param(3000, type="integer"),
        "store": Param("scope", enum=list(STORES)),
        "scope": Param("bench", type="string", minLength=1),
        "service": Param(1, type="integer"),
        "quantity": Param(100, type="integer"),
    },
    tags=["mirpanel", "benchmark"],
):
    BenchPlaceOrderOperator(task_id="place", orders=[], ledger_scope="{{ params.scope }}", retries=0)
