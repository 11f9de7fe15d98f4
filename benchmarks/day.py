"""A day of 10,000 or 50,000 orders at the published limits: placement and polling time, requests per
minute, metadata-DB rows and bytes — ``python -m benchmarks.day [--orders 10000 50000] [--keys 1]``.

Time and requests are computed from the limits (``add`` 60/min, ``status`` 120/min per key, or the
``--add`` / ``--status`` given) and the assumptions below. The ledger's rows and bytes are not
guessed: the script places a scaled-down campaign with the real :class:`PlacementRun` (its windows of
``sending`` marks, its outcome pages of at most 100 rows) into a store that counts every write, at
the pace the ``add`` budget imposes (one order ending at a time, 1,000× faster than real time), and
scales the count to the day.

Assumptions (change them with the options):

- orders arrive in ``--campaigns`` placements a day (each one mapped task with its own ledger page
  sequence; default 20), spread over the day;
- an order stays open ``--open-hours`` on average (default 6 h) and is polled by a deferrable sensor
  every ``--poll`` seconds (default 60) until it ends, 100 IDs per ``status`` request;
- each placement's ledger scope also holds one lease row (a named scope, issue 20), rewritten every
  ``ttl / 4`` while it places — the same row, so it adds updates, not rows;
- XCom keeps each placement's records (one row per task, its records as JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from airflow_provider_mirpanel.placement.ledger import PAGE_SIZE, PlacementLedger
from airflow_provider_mirpanel.placement.run import PlacementOptions, PlacementRun
from airflow_provider_mirpanel.protocol import AddOrderRecord, BalanceRecord, ServiceRecord
from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore

DAY_MINUTES = 24 * 60
SERVICE = {
    "service": 1,
    "name": "Followers",
    "type": "Default",
    "category": "Instagram",
    "rate": "0.90",
    "min": 10,
    "max": 100000,
    "refill": True,
    "cancel": False,
    "dripfeed": False,
}
#: A lease as a named scope stores it (issue 20): owner, token, times — measured from its JSON form.
LEASE = {
    "owner": {
        "dag_id": "campaign_daily_placement",
        "run_id": "scheduled__2026-12-04T00:00:00+00:00",
        "task_id": "place",
        "map_index": 17,
    },
    "token": "5f0c7c1e9d7b4a8e9c3b2a1f0e9d8c7b",
    "taken_at": 1796371200.123,
    "renewed_at": 1796371260.456,
    "expires": 1796371380.456,
    "released_at": None,
}
#: A state-store row's overhead in the metadata DB besides key and value (ids, timestamps, index).
ROW_OVERHEAD = 120


class CountingStore(MemoryStateStore):
    """A state store that counts writes, and the bytes of each value as JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.value_bytes = 0
        self._lock = threading.Lock()

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self.writes += 1
            self.value_bytes += len(key) + len(json.dumps(value, separators=(",", ":")))
            super().set(key, value)


class PacedPlacer:
    """Answers ``add`` one at a time, ``seconds`` apart: a placement held to its ``add`` budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 10_000_000
        self._lock = threading.Lock()

    def get_services(self) -> Sequence[ServiceRecord]:
        return [cast(ServiceRecord, SERVICE)]

    def get_balance(self) -> BalanceRecord:
        return cast(BalanceRecord, {"balance": 1e9, "currency": "USD"})

    def add_order(self, service: int, **params: Any) -> AddOrderRecord:
        with self._lock:
            time.sleep(self.seconds)
            self._next += 1
            return cast(AddOrderRecord, {"order": self._next, "service": service, **params})


@dataclass
class LedgerCost:
    """What placing ``orders`` orders wrote: state-store rows (pages) and their bytes, XCom bytes."""

    orders: int
    pages: int
    page_bytes: int
    xcom_bytes: int


def measure_ledger(orders: int, pace: float = 0.002) -> LedgerCost:
    """Place ``orders`` orders with the real placement code, at a paced ``add``, counting the writes."""
    rows = [
        {
            "key": f"campaign-2026-12-04/{i:06d}",
            "service": 1,
            "quantity": 1000,
            "link": f"https://instagram.com/p/C{i:09d}/",
        }
        for i in range(orders)
    ]
    store = CountingStore()
    ledger = PlacementLedger(store, scope="campaign-2026-12-04")
    run = PlacementRun(PacedPlacer(pace), rows, ledger, PlacementOptions(), _Quiet())
    records = run.execute()
    return LedgerCost(orders, store.writes, store.value_bytes, len(json.dumps(records, separators=(",", ":"))))


class _Quiet:
    def info(self, *args: Any, **kwargs: Any) -> None: ...

    def warning(self, *args: Any, **kwargs: Any) -> None: ...

    def exception(self, *args: Any, **kwargs: Any) -> None: ...


def day(
    orders: int,
    keys: int,
    add_per_min: float,
    status_per_min: float,
    campaigns: int,
    open_hours: float,
    poll: float,
    ledger: LedgerCost,
    lease_ttl: float = 120.0,
) -> dict[str, Any]:
    """The day's numbers for ``orders`` orders spread over ``keys`` keys (see the module docs)."""
    add_capacity = add_per_min * DAY_MINUTES * keys
    placing_minutes = orders / (add_per_min * keys)
    per_campaign = orders / campaigns
    campaign_minutes = per_campaign / (add_per_min * keys)
    open_orders = orders / 24.0 * open_hours  # arrivals per hour × hours open (Little's law)
    polls_per_min = 60.0 / poll
    status_wanted = polls_per_min * math.ceil(open_orders / PAGE_SIZE)
    status_capacity = status_per_min * keys
    scale = orders / ledger.orders
    pages = ledger.pages * scale
    page_bytes = ledger.page_bytes * scale
    lease_rows = campaigns
    lease_updates = campaigns * campaign_minutes * 60 / (lease_ttl / 4)
    lease_bytes = campaigns * len(json.dumps(LEASE, separators=(",", ":")))
    xcom_bytes = ledger.xcom_bytes * scale
    return {
        "orders": orders,
        "keys": keys,
        "add capacity/day": add_capacity,
        "fits": orders <= add_capacity,
        "placing (min of add budget)": placing_minutes,
        "one campaign (min)": campaign_minutes,
        "add requests/min while placing": add_per_min * keys,
        "open orders (average)": open_orders,
        "status requests/min wanted": status_wanted,
        "status requests/min allowed": status_capacity,
        "poll round (s)": max(poll, math.ceil(open_orders / PAGE_SIZE) / status_capacity * 60),
        "status requests/day": min(status_wanted, status_capacity) * DAY_MINUTES,
        "ledger rows/day": pages + lease_rows,
        "ledger bytes/day": page_bytes + lease_bytes + (pages + lease_rows) * ROW_OVERHEAD,
        "lease rewrites/day": lease_updates,
        "xcom bytes/day": xcom_bytes,
    }


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(days: Sequence[Mapping[str, Any]]) -> str:
    """The days side by side, as a Markdown table."""
    lines = [
        "| | " + " | ".join(f"{d['orders']:,} orders, {d['keys']} key{'s' * (d['keys'] > 1)}" for d in days) + " |",
        "|---|" + "---:|" * len(days),
    ]
    for name in days[0]:
        if name not in ("orders", "keys"):
            lines.append(f"| {name} | " + " | ".join(_format(d[name]) for d in days) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.day", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--add", type=float, default=60.0, help="add requests per minute per key (default 60)")
    parser.add_argument("--status", type=float, default=120.0, help="status requests per minute per key (120)")
    parser.add_argument("--campaigns", type=int, default=20, help="placements a day (default 20)")
    parser.add_argument("--open-hours", type=float, default=6.0, help="hours an order stays open (default 6)")
    parser.add_argument("--poll", type=float, default=60.0, help="seconds between a sensor's polls (default 60)")
    parser.add_argument("--sample", type=int, default=2_000, help="orders placed to measure the ledger (2,000)")
    args = parser.parse_args(argv)
    ledger = measure_ledger(args.sample)
    print(
        f"Measured: {ledger.orders:,} orders placed at the add budget's pace wrote {ledger.pages:,} ledger pages "
        f"({ledger.page_bytes / ledger.orders:.0f} B an order as JSON; pages of at most {PAGE_SIZE} rows); "
        f"records as XCom {ledger.xcom_bytes / ledger.orders:.0f} B an order.\n"
    )
    days = [
        day(orders, keys, args.add, args.status, args.campaigns, args.open_hours, args.poll, ledger)
        for orders in args.orders
        for keys in args.keys
    ]
    print(table(days))
    return 0


if __name__ == "__main__":
    sys.exit(main())
