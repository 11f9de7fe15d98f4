"""``python -m benchmarks --deployment`` (or ``--page``): the MirPanel page's cost on a PostgreSQL metadata DB.

In the deployment of ``make e2e`` (see ``deployed.py``), through Airflow's REST API as a script would, it writes
100 campaigns of 1,000 orders each in the ledger's real page format (:class:`~airflow_provider_mirpanel.ledger.
PlacementLedger` pages of 100 rows in the ledger asset's state store: 1,000 pages; 1 % of the orders of unknown
outcome; a lease on every tenth), a full balance history (48 readings) and a placed and a finished campaign
event per campaign. Then it asks the api-server for ``/mirpanel/`` on a new connection each time and reads the
``Server-Timing`` the page sends (the time reading the metadata DB and rendering; the app keeps nothing between
requests, so each request is as cold as the first but for the app's one-time build, which is left out).

Rows: the page as it opens (20 campaigns a page: 200 ledger pages read; target ≤ 300 ms, median), the same
with all 100 campaigns on one page (1,000 ledger pages read: the cost grows with the pages read), the JSON twin.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import requests

from benchmarks.table import Row

CONN_ID = "mirpanel_default"
DAG_ID = "mirpanel_bench_page"
CAMPAIGNS, ORDERS = 100, 1_000
#: Requests timed per row (their median is the row's wall).
REQUESTS = 15
TARGET_SECONDS = 0.3


class RestStateStore:
    """An asset's state store through Airflow's REST API (``/api/v2/assets/{id}/state-store``): get and set."""

    def __init__(self, api: Any, asset_id: int) -> None:
        self.api, self.asset_id = api, asset_id

    def get(self, key: str, default: Any = None) -> Any:
        reply = self.api.session.get(f"{self.api.base_url}/api/v2/assets/{self.asset_id}/state-store/{key}", timeout=60)
        if reply.status_code == 404:
            return default
        reply.raise_for_status()
        return reply.json()["value"]

    def set(self, key: str, value: Any) -> None:
        self.api.call("PUT", f"/assets/{self.asset_id}/state-store/{key}", expect=(204,), json={"value": value})


def seed(api: Any, campaigns: int = CAMPAIGNS, orders: int = ORDERS) -> dict[str, int]:
    """Write the campaigns, the balance history and the events; the asset IDs."""
    from airflow_provider_mirpanel.placement.ledger import PAGE_SIZE, LedgerEntry, LedgerState, PlacementLedger
    from airflow_provider_mirpanel.plugins.ledger_keys import LEASE

    ids = {
        name: api.asset_id(name)
        for name in (
            f"mirpanel_order_ledger__{CONN_ID}",
            f"mirpanel_balance__{CONN_ID}",
            "mirpanel_bench_campaign_placed",
            "mirpanel_bench_campaign_finished",
        )
    }
    ledger_id, balance_id, placed_id, finished_id = ids.values()
    store = RestStateStore(api, ledger_id)
    now = time.time()
    for c in range(campaigns):
        scope = f"bench-campaign-{c:03d}"
        ledger = PlacementLedger(store, scope=scope)
        for first in range(0, orders, PAGE_SIZE):
            ledger.append(
                {
                    f"{scope}-order-{n:05d}": (
                        LedgerEntry(LedgerState.UNKNOWN, "0123456789abcdef", error="ReadTimeout: the reply was lost")
                        if n % 100 == 99
                        else LedgerEntry(LedgerState.PLACED, "0123456789abcdef", 100_000 + n, 0.0123)
                    )
                    for n in range(first, min(first + PAGE_SIZE, orders))
                }
            )
        if c % 10 == 0:
            store.set(
                f"mirpanel.ledger.{scope}.{LEASE}",
                {
                    "owner": {
                        "dag_id": "mirpanel_campaign",
                        "run_id": f"bench_{c}",
                        "task_id": "place_orders",
                        "map_index": -1,
                    },
                    "token": "bench",
                    "taken_at": now - 120,
                    "renewed_at": now - 60,
                    "expires": now + 600,
                    "released_at": None,
                },
            )
        for stage, extra in (
            ("placed", {"states": {"placed": orders - orders // 100, "unknown": orders // 100}}),
            ("finished", {"statuses": {"Completed": orders - 60, "Partial": 50, "Canceled": 10}}),
        ):
            api.call(
                "POST",
                "/assets/events",
                json={
                    "asset_id": placed_id if stage == "placed" else finished_id,
                    "extra": {
                        "stage": stage,
                        "campaign": scope,
                        "ledger_scope": scope,
                        "mirpanel_conn_id": CONN_ID,
                        "orders": orders,
                        "spend": 12.3,
                        **extra,
                    },
                },
            )
    history = [[now - 1800 * n, 1000.0 + 7 * n] for n in range(47, -1, -1)]  # 48 readings over 24 h: full
    RestStateStore(api, balance_id).set("balance_history", history)
    return ids


def timed_pages(api: Any, path: str, requests_count: int = REQUESTS) -> tuple[list[float], list[float], Any]:
    """Server times (Server-Timing) and wall times of ``requests_count`` GETs, each on a new connection."""
    token = api.session.headers["Authorization"]
    server, wall, body = [], [], None
    for _ in range(requests_count):
        with requests.Session() as session:
            session.trust_env = False
            started = time.perf_counter()
            reply = session.get(f"{api.base_url}{path}", headers={"Authorization": token}, timeout=120)
            wall.append(time.perf_counter() - started)
        reply.raise_for_status()
        server.append(float(reply.headers["Server-Timing"].split("dur=")[1]) / 1000)
        body = reply.json() if path.startswith("/mirpanel/data.json") else reply.text
    return server, wall, body


def run(deployment: Any, progress: Any) -> list[Row]:
    """Seed, then the rows of the page's cost (see the module's docstring)."""
    from deployment import wait_for

    api = deployment.api
    wait_for(
        "the page benchmark's DAG parsed (its assets)",
        lambda: _assets_exist(api),
        180,
        interval=1,
        check=deployment.check,
    )
    started = time.perf_counter()
    seed(api)
    seeded = time.perf_counter() - started
    first_started = time.perf_counter()
    api.session.get(f"{api.base_url}/mirpanel/", timeout=120).raise_for_status()  # builds the app
    first = time.perf_counter() - first_started
    rows = []
    pages = CAMPAIGNS * ORDERS // 100
    for case, path, read, target in (
        ("MirPanel page: first page (20 campaigns)", "/mirpanel/", 20 * ORDERS // 100, True),
        ("MirPanel page: all 100 campaigns on one page", "/mirpanel/?per_page=100", pages, False),
        ("MirPanel page: its JSON twin (20 campaigns)", "/mirpanel/data.json", 20 * ORDERS // 100, False),
    ):
        server, wall, body = timed_pages(api, path)
        median = statistics.median(server)
        row = Row(case, CAMPAIGNS * ORDERS, wall=median)
        row.note = (
            f"median server time of {len(server)} requests (Server-Timing; min {min(server) * 1000:.0f}, "
            f"max {max(server) * 1000:.0f} ms; with HTTP, median {statistics.median(wall) * 1000:.0f} ms); "
            f"{read:,} of {pages:,} ledger pages read"
        )
        if target:
            row.target, row.ideal = f"≤ {TARGET_SECONDS * 1000:.0f} ms (median)", TARGET_SECONDS
            row.ratio, row.met = median / TARGET_SECONDS, median <= TARGET_SECONDS
            row.note += f"; seeded through the REST API in {seeded:.0f} s; the app's first request {first:.2f} s"
        if isinstance(body, dict):
            items = body["campaigns"]["items"]
            # make bench-deployment's placement runs leave scopes of their own in the same ledger asset
            row.check(body["campaigns"]["total"] >= CAMPAIGNS, f"{body['campaigns']['total']} campaigns")
            row.check(all(c["scope"].startswith("bench-campaign-") for c in items), "other campaigns shown first")
            row.check(
                all((c["placed"], c["unknown"]) == (ORDERS - ORDERS // 100, ORDERS // 100) for c in items),
                "wrong counts",
            )
            row.check(body["unknown_orders"]["total"] == len(items) * ORDERS // 100, "wrong unknown orders")
        else:
            row.check("bench-campaign-" in body and "Orders of unknown outcome" in body, "the page lacks campaigns")
        rows.append(row)
        progress(row)
    return rows


def _assets_exist(api: Any) -> bool:
    names = {asset["name"] for asset in api.get("/assets", limit=100)["assets"]}
    return {f"mirpanel_order_ledger__{CONN_ID}", f"mirpanel_balance__{CONN_ID}"} <= names
