"""``python -m benchmarks --deployment``: placement with and without the ledger in a real Airflow deployment.

Starts the deployment of ``make e2e`` (``tests/e2e/deployment.py``: PostgreSQL, api-server,
scheduler with LocalExecutor, dag-processor, triggerer) in ``.e2e/bench`` with ``benchmarks/dags``
as its DAGs folder, and the sandbox panel in a child process. At each panel latency it has the
scheduler run ``mirpanel_bench_place`` twice — N orders without a state store, then the same N
with the ledger — and measures the floor in this process: ``MirPanelHook.add_order`` of N orders
on the connection's concurrency of threads. Rows: the time of ``execute`` as the task measured it
(the task instance's duration in the note), and the ledger's throughput against the run without
a store (target ≥ 0.8×). The ledger run also times single trips to the real state store. Last, the MirPanel
page's rows (``benchmarks/page.py``; alone with ``--page``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.panel_process import PanelProcess
from benchmarks.table import Row

ROOT = Path(__file__).resolve().parent.parent
DAGS = Path(__file__).resolve().parent / "dags"
HOME = ROOT / ".e2e" / "bench"
DAG_ID = "mirpanel_bench_place"
#: The target: placement with the ledger at least this fraction of the throughput without a store.
TARGET = 0.8


def _e2e() -> Any:
    """``tests/e2e/deployment.py`` (not a package: imported from its folder, as its conftest does)."""
    folder = str(ROOT / "tests" / "e2e")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import deployment

    return deployment


def floor(panel: PanelProcess, n: int, service: int, quantity: int) -> tuple[float, int]:
    """Seconds for ``hook.add_order`` of ``n`` orders on ``concurrency`` threads, and that concurrency."""
    from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
    from airflow_provider_mirpanel.sandbox import CONN_ENV_VAR

    os.environ[CONN_ENV_VAR] = json.dumps(panel.connection())
    hook = MirPanelHook()
    slots = hook.settings.concurrency
    links = [f"https://example.com/bench/floor/{time.time_ns()}/{i}" for i in range(n)]
    started = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(lambda link: hook.add_order(service, link=link, quantity=quantity), links))
    wall = time.perf_counter() - started
    hook.close()
    return wall, slots


def run(n: int, latencies: tuple[float, ...], progress: Any, placement: bool = True) -> list[Row]:
    """Every row of the deployment benchmark (see the module's docstring); the MirPanel page's rows
    (``benchmarks/page.py``) last, or only those without ``placement``."""
    from benchmarks import page

    e2e = _e2e()
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        progress(row)

    with e2e.sigterm_as_interrupt(), PanelProcess(latency=0.0) as panel:
        service, quantity = panel.service()
        # OpenLineage off: make e2e turns it on to check lineage; here it would only add to both runs
        deployment = e2e.Deployment(
            HOME, extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "AIRFLOW__OPENLINEAGE__DISABLED": "true"}
        )
        deployment._dags_parsed = lambda: DAG_ID in {dag["dag_id"] for dag in deployment.api.get("/dags")["dags"]}
        try:
            deployment.start()
            api = deployment.api
            api.call(
                "POST",
                "/connections",
                expect=(201,),
                json={
                    "connection_id": "mirpanel_default",
                    "conn_type": "mirpanel",
                    "host": panel.url,
                    "password": panel.api_key,
                    "extra": json.dumps(panel.connection()["extra"]),
                },
            )
            api.set_paused(DAG_ID, False)
            progress_note = f"deployment up in {deployment.timings['total']:.0f} s"
            print(progress_note, flush=True)
            for latency in latencies if placement else ():
                panel.set_latency(latency)
                label = f"{latency * 1000:g} ms"
                walls: dict[bool, float] = {}
                for ledger in (False, True):
                    run_id = f"bench_{int(latency * 1000)}ms_{'ledger' if ledger else 'nostore'}_{time.time_ns()}"
                    panel.reset()
                    api.trigger(DAG_ID, run_id, {"n": n, "ledger": ledger, "service": service, "quantity": quantity})
                    state = deployment.wait_run(DAG_ID, run_id, timeout=1800)["state"]
                    ti = api.task_instance(DAG_ID, run_id, "place")
                    summary = api.xcom(DAG_ID, run_id, "place", key="bench") if state == "success" else {}
                    stats = panel.stats()
                    wall = float(summary.get("wall") or 0.0) or None
                    case = f"deployment: placement {'with the ledger' if ledger else 'without a state store'}, {label}"
                    row = Row(case, n, requests=sum(stats["requests"].values()), wall=wall)
                    row.check(state == "success", f"the run ended {state}")
                    row.check(summary.get("placed") == n, f"{summary.get('placed')} of {n} placed")
                    row.check(stats["requests"] == {"services": 1, "add": n}, f"requests {stats['requests']}")
                    notes = [
                        f"{n / wall:.0f} orders/s" if wall else "",
                        f"task instance {ti.get('duration') or 0:.1f} s",
                    ]
                    if ledger and "set_trip" in summary:
                        notes.append(
                            f"state store trip: set {summary['set_trip'] * 1000:.1f} ms, "
                            f"get {summary['get_trip'] * 1000:.1f} ms (median of 20)"
                        )
                    if wall:
                        walls[ledger] = wall
                    if ledger and len(walls) == 2:
                        row.ideal, row.ratio = walls[False], walls[False] / walls[True]
                        row.target = f"≥ {TARGET} × the throughput without a store"
                        row.met = row.ratio >= TARGET
                        notes.insert(0, "ideal = the run without a store; ratio = its wall / this wall")
                    row.note = "; ".join(filter(None, notes))
                    add(row)
                panel.reset()
                wall, slots = floor(panel, n, service, quantity)
                row = Row(
                    f"floor: hook.add_order, {slots} threads, {label}",
                    n,
                    requests=sum(panel.stats()["requests"].values()),
                    wall=wall,
                    note=f"{n / wall:.0f} orders/s; in this process, no Airflow",
                )
                add(row)
            page.run(deployment, add)
        finally:
            leftovers = deployment.stop()
            if leftovers:
                print(f"killed by the sweep: {leftovers}", file=sys.stderr)
    return rows
