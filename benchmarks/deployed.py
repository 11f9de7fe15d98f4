"""``python -m benchmarks --deployment``: placement with and without the ledger in a real Airflow deployment.

Starts the deployment of ``make e2e`` (``tests/e2e/deployment.py``: PostgreSQL, api-server,
scheduler with LocalExecutor, dag-processor, triggerer) in ``.e2e/bench`` with ``benchmarks/dags``
as its DAGs folder, and the sandbox panel in a child process. At each panel latency it has the
scheduler run ``mirpanel_bench_place`` — after one untimed run (the worker's first imports), five
rounds of: N orders without a state store, the same N with the per-task ledger, then with a ledger
scope (its lease claimed first); each row is the round of median time — and measures the floor in
this process: ``MirPanelHook.add_order`` of N orders on the connection's concurrency of threads.
Rows: the time of the placement as the task measured it (the task instance's duration in the
note), the ledgers' throughput against the run without a store (target ≥ 0.8×), and the claim of
the scope on its own row (the ``ledger_claim`` XCom). Then four runs, each placing its own N
orders into one fresh scope, are triggered at once: the scope's lease makes them take turns
(the others wait deferred), and all four must finish within 4 × one writer's time + 3 × (the
waiting writer's poll interval + the claim's bound), both measured from trigger to the run's end.
The per-task ledger run also times single trips to the real state store. Last, the MirPanel
page's rows (``benchmarks/page.py``; alone with ``--page``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.panel_process import PanelProcess
from benchmarks.table import Row

ROOT = Path(__file__).resolve().parent.parent
DAGS = Path(__file__).resolve().parent / "dags"
HOME = ROOT / ".e2e" / "bench"
DAG_ID = "mirpanel_bench_place"
#: The asset whose state store holds the bench's ledger scopes (``mirpanel_default``'s).
LEDGER_ASSET = "mirpanel_order_ledger__mirpanel_default"
#: The target: placement with the ledger at least this fraction of the throughput without a store.
TARGET = 0.8


def e2e_module(name: str = "deployment") -> Any:
    """A module of ``tests/e2e/`` (not a package: imported from its folder, as its conftest does)."""
    folder = str(ROOT / "tests" / "e2e")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


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


def run(
    n: int, latencies: tuple[float, ...], progress: Any, placement: bool = True, page_rows: bool = True
) -> list[Row]:
    """Every row of the deployment benchmark (see the module's docstring); the MirPanel page's rows
    (``benchmarks/page.py``) last unless not ``page_rows``, or only those without ``placement``."""
    from benchmarks import page

    e2e = e2e_module()
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        progress(row)

    with e2e.sigterm_as_interrupt(), PanelProcess(latency=0.0) as panel:
        service, quantity = panel.service()
        # OpenLineage off: make e2e turns it on to check lineage; here it would only add to every run.
        # One DAG bundle, this folder (make e2e adds the scenarios' own).
        deployment = e2e.Deployment(
            HOME,
            extra_env={
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__OPENLINEAGE__DISABLED": "true",
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                    [{"name": "dags-folder", "classpath": e2e.LOCAL_BUNDLE, "kwargs": {}}]
                ),
            },
        )
        deployment._dags_parsed = lambda: DAG_ID in {dag["dag_id"] for dag in deployment.api.get("/dags")["dags"]}
        try:
            deployment.start()
            api = deployment.api
            api.add_panel_connection(panel)
            api.set_paused(DAG_ID, False)
            print(f"deployment up in {deployment.timings['total']:.0f} s", flush=True)
            bench = Bench(deployment, panel, n, {"service": service, "quantity": quantity})
            for latency in latencies if placement else ():
                panel.set_latency(latency)
                for row in bench.at(latency):
                    add(row)
                panel.reset()
                wall, slots = floor(panel, n, service, quantity)
                add(
                    Row(
                        f"floor: hook.add_order, {slots} threads, {latency * 1000:g} ms",
                        n,
                        requests=sum(panel.stats()["requests"].values()),
                        wall=wall,
                        note=f"{n / wall:.0f} orders/s; in this process, no Airflow",
                    )
                )
            if page_rows:
                page.run(deployment, add)
        finally:
            leftovers = deployment.stop()
            if leftovers:
                print(f"killed by the sweep: {leftovers}", file=sys.stderr)
    return rows


STORE_NAMES = {
    "none": "without a state store",
    "task": "with the per-task ledger",
    "scope": "with a ledger scope, claim included",
}
#: The runs of one latency, in order: the ledgers' ratios are against the first.
STORES = tuple(STORE_NAMES)
#: Rounds of the three runs: each row is the run of median wall.
ROUNDS = 5


@dataclass(frozen=True)
class Placement:
    """One placement run: its DAG run, the task's ``bench`` XCom, the panel's counts, its task instance."""

    run_id: str
    run: dict[str, Any]
    summary: dict[str, Any]
    stats: dict[str, Any]
    ti: dict[str, Any]

    @property
    def wall(self) -> float | None:
        """The placement's seconds as the task measured them."""
        return float(self.summary.get("wall") or 0.0) or None


def _median_try(placements: list[Placement]) -> Placement:
    """The placement of median wall (a failed one counts as slowest)."""
    ranked = sorted(placements, key=lambda placement: placement.wall or float("inf"))
    return ranked[len(ranked) // 2]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


class Bench:
    """The runs of one deployment: placements one at a time, then four writers of one scope at once."""

    def __init__(self, deployment: Any, panel: PanelProcess, n: int, order: dict[str, int]):
        self.deployment = deployment
        self.api = deployment.api
        self.panel = panel
        self.n = n
        self.order = order

    def trigger(self, run_id: str, store: str, scope: str) -> None:
        self.api.trigger(DAG_ID, run_id, {"n": self.n, "store": store, "scope": scope, **self.order})

    def ended(self, run_id: str) -> dict[str, Any]:
        return dict(self.deployment.wait_run(DAG_ID, run_id, timeout=1800))

    def xcom(self, run_id: str, key: str) -> dict[str, Any]:
        try:
            return dict(self.api.xcom(DAG_ID, run_id, "place", key=key))
        except Exception:  # no such XCom: the run failed before pushing it
            return {}

    def place(self, run_id: str, store: str, scope: str) -> Placement:
        """One placement run, triggered and waited for."""
        self.panel.reset()
        self.trigger(run_id, store, scope)
        run = self.ended(run_id)
        summary = self.xcom(run_id, "bench") if run["state"] == "success" else {}
        return Placement(run_id, run, summary, self.panel.stats(), self.api.task_instance(DAG_ID, run_id, "place"))

    def at(self, latency: float) -> list[Row]:
        """The rows of one panel latency."""
        from airflow_provider_mirpanel.operators.scoped import DEFAULT_WAIT_POLL
        from airflow_provider_mirpanel.placement.lease import LeaseTiming

        label, tag = f"{latency * 1000:g} ms", f"{int(latency * 1000)}ms_{time.time_ns()}"
        self.place(f"bench_{tag}_warm_up", "none", "warm-up")  # the worker's first imports are not measured
        tries: dict[str, list[Placement]] = {store: [] for store in STORES}
        for round_ in range(ROUNDS):  # in turn, so that a busy moment of the machine falls on every store alike
            for store in STORES:
                tries[store].append(self.place(f"bench_{tag}_{store}_{round_}", store, f"bench-{tag}-single-{round_}"))
        rows: list[Row] = []
        medians = {store: _median_try(placements) for store, placements in tries.items()}
        for store in STORES:
            rows.append(self._placement_row(store, label, tries[store], medians[store], medians["none"]))
            if store == "scope":
                rows.append(self._claim_row(medians["scope"].run_id, label, medians["scope"].wall))
        one = _median([_span(placement.run) for placement in tries["scope"]])
        rows.append(self._writers(tag, label, one, DEFAULT_WAIT_POLL, LeaseTiming().claim_wait))
        return rows

    def _placement_row(self, store: str, label: str, tries: list[Placement], median: Placement, none: Placement) -> Row:
        walls = [placement.wall for placement in tries if placement.wall]
        row = Row(
            f"deployment: placement {STORE_NAMES[store]}, {label}",
            self.n,
            requests=sum(median.stats["requests"].values()),
            wall=median.wall,
        )
        for placement in tries:
            row.check(placement.run["state"] == "success", f"{placement.run_id} ended {placement.run['state']}")
            row.check(placement.summary.get("placed") == self.n, f"{placement.summary.get('placed')} of {self.n}")
            row.check(placement.stats["requests"] == {"services": 1, "add": self.n}, f"{placement.stats['requests']}")
        notes = [
            f"median of {len(tries)} (walls {', '.join(f'{wall:.2f}' for wall in sorted(walls))} s)",
            f"{self.n / median.wall:.0f} orders/s" if median.wall else "",
            f"task instance {median.ti.get('duration') or 0:.1f} s",
        ]
        if "set_trip" in median.summary:
            notes.append(
                f"{'the ledger asset' if store == 'scope' else 'the task'}'s state store trip: set "
                f"{median.summary['set_trip'] * 1000:.1f} ms, get {median.summary['get_trip'] * 1000:.1f} ms "
                "(median of 20)"
            )
        if store != "none" and median.wall and none.wall:
            row.ideal, row.ratio = none.wall, none.wall / median.wall
            row.target = f"≥ {TARGET} × the throughput without a store"
            row.met = row.ratio >= TARGET
            notes.insert(0, "ideal = the median run without a store; ratio = its wall / this wall")
        row.note = "; ".join(filter(None, notes))
        return row

    def _claim_row(self, run_id: str, label: str, wall: float | None) -> Row:
        claim = self.xcom(run_id, "ledger_claim")
        seconds = claim.get("claim")
        row = Row(
            f"deployment: claiming the scope's lease (write-wait-verify), {label}",
            1,
            wall=float(seconds) if seconds is not None else None,
        )
        row.check(bool(claim) and claim.get("polls") == 0, f"ledger_claim XCom {claim}")
        share = f"; {seconds / wall:.0%} of the placement above" if seconds is not None and wall else ""
        row.note = f"from the ledger_claim XCom (waited {claim.get('waited')} s, nobody else held the scope){share}"
        return row

    def _writers(self, tag: str, label: str, one: float | None, poll: float, claim_bound: float) -> Row:
        """Four runs, each placing its own N orders into one fresh scope, triggered at once."""
        scope, runs = f"bench-{tag}-four", [f"bench_{tag}_writer{i}" for i in range(1, 5)]
        self.panel.reset()
        for run_id in runs:
            self.trigger(run_id, "scope", scope)
        ended = {run_id: self.ended(run_id) for run_id in runs}
        stats = self.panel.stats()
        states = {run_id: run["state"] for run_id, run in ended.items()}
        span = max(_end(run) for run in ended.values()) - min(_queued(run) for run in ended.values())
        claims = [self.xcom(run_id, "ledger_claim") for run_id in runs]
        row = Row(
            f"deployment: 4 writers of one scope at once (each its own {self.n:,} orders), {label}",
            4 * self.n,
            requests=sum(stats["requests"].values()),
            wall=span,
        )
        row.check(all(state == "success" for state in states.values()), f"runs {states}")
        # a writer whose claim another claim outran at the verify had read the catalogue while claiming; it
        # defers (a poll) and reads it again when it resumes
        polls = sum(int(claim.get("polls") or 0) for claim in claims)
        services = stats["requests"].get("services", 0)
        row.check(4 <= services <= 4 + polls, f"{services} services requests for 4 writers and {polls} polls")
        row.check(stats["requests"].get("add") == 4 * self.n, f"requests {stats['requests']}")
        row.check(all(claims), f"a writer pushed no ledger_claim XCom: {claims}")
        if one:
            row.ideal = 4 * one + 3 * (poll + claim_bound)
            row.ratio = row.ideal / span
            row.target = "≤ 4 × one writer + 3 × (poll + claim bound)"
            row.met = span <= row.ideal
        # in the order they claimed: each reads the pages of those before it
        turns = sorted(
            zip(claims, (self.xcom(run_id, "bench") for run_id in runs), strict=True),
            key=lambda pair: pair[0].get("waited") or 0.0,
        )
        waits = ", ".join(
            f"{claim.get('waited', 0):.1f} s (polls: {claim.get('polls', 0)}, claim "
            f"{claim.get('claim', 0):.1f} s, placement {bench.get('wall', 0):.1f} s)"
            for claim, bench in turns
        )
        row.note = (
            f"trigger → last end; ideal = 4 × {one or 0:.1f} s (one writer, trigger → end) + 3 × ({poll:g} s "
            f"poll + {claim_bound:g} s claim bound); ratio = ideal / wall; in turn, the writers waited "
            f"{waits}; the scope has {self.pages(scope):,} pages"
        )
        return row

    def pages(self, scope: str) -> int:
        """How many ledger pages a scope has (the REST API lists the ledger asset's keys)."""
        from airflow_provider_mirpanel.placement.ledger import PAGE_PREFIX

        asset = self.api.asset_id(LEDGER_ASSET)
        prefix, keys, total, offset = f"{PAGE_PREFIX}{quote(scope, safe='')}.", 0, None, 0
        while total is None or offset < total:
            reply = self.api.get(f"/assets/{asset}/state-store", limit=100, offset=offset)
            total, entries = reply["total_entries"], reply["asset_state_store"]
            if not entries:
                break
            offset += len(entries)
            keys += sum(
                1 for entry in entries if entry["key"].startswith(prefix) and entry["key"][len(prefix) :].isdigit()
            )
        return keys


def _queued(run: dict[str, Any]) -> float:
    return datetime.fromisoformat(run["queued_at"] or run["start_date"]).timestamp()


def _end(run: dict[str, Any]) -> float:
    return datetime.fromisoformat(run["end_date"]).timestamp()


def _span(run: dict[str, Any]) -> float:
    """Seconds from a run's trigger (queued) to its end."""
    return _end(run) - _queued(run)
