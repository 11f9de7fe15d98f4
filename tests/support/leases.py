"""Scope leases in tests: stores and clocks whose steps a test orders, and the task instances of writers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from airflow_provider_mirpanel.placement import lease as lease_module
from airflow_provider_mirpanel.placement.lease import Lease, LeaseOwner, LeaseTiming, ScopeLease
from airflow_provider_mirpanel.placement.ledger import ledger_asset
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore
from support.stores import MemoryAssetStores

OWNER_A = LeaseOwner("campaign", "run_a", "place", -1)
OWNER_B = LeaseOwner("campaign", "run_b", "place", -1)
KEY = "mirpanel.ledger.spring.lease"


class StepStore(MemoryStateStore):
    """A state store that runs ``interlude`` (another writer's steps) just before its next ``set``."""

    def __init__(self) -> None:
        super().__init__()
        self.interlude: Callable[[], None] | None = None
        self.writes: list[str] = []

    def set(self, key: str, value: Any) -> None:
        interlude, self.interlude = self.interlude, None
        if interlude is not None:
            interlude()
        self.writes.append(key)
        super().set(key, value)


class ManualClock:
    """Wall and monotonic time that move only when told; ``sleep`` runs ``during_sleep`` first."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.during_sleep: Callable[[], None] | None = None

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        during, self.during_sleep = self.during_sleep, None
        if during is not None:
            during()
        self.now += seconds


def lease_of(store: Any, owner: LeaseOwner, clock: Any, try_number: int = 1) -> ScopeLease:
    return ScopeLease(store, KEY, owner, LeaseTiming(), clock, try_number=try_number)


class TI:
    """A task instance as the operators read it: who it is, its try, and the XComs it pushes."""

    def __init__(self, run_id: str = "run_a", try_number: int = 1, map_index: int = -1, dag_id: str = "campaign"):
        self.dag_id, self.run_id, self.task_id = dag_id, run_id, "place"
        self.map_index, self.try_number = map_index, try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def rows(panel: SandboxPanel, n: int, tag: str = "row") -> list[dict[str, Any]]:
    service = next(s for s in panel.catalogue.services if s.get("type") == "Default")
    return [
        {
            "key": f"{tag}-{i}",
            "service": service["service"],
            "link": f"https://example.com/{tag}/{i}",
            "quantity": service["min"],
        }
        for i in range(n)
    ]


def context(assets: MemoryAssetStores, ti: TI) -> Any:
    return {"ti": ti, "task_state_store": MemoryStateStore(), "asset_state_store": assets}


def hold(assets: MemoryAssetStores, owner: LeaseOwner, scope: str = "spring") -> None:
    """Another task holds ``scope`` now (its lease written as that task's claim writes it)."""
    now = lease_module.DEFAULT_CLOCK.time()
    store = assets[ledger_asset("mirpanel_default")]
    store.set(f"mirpanel.ledger.{scope}.lease", Lease(owner, "theirs", now, now, now + 60).as_json())


def release(assets: MemoryAssetStores, scope: str = "spring") -> None:
    store = assets[ledger_asset("mirpanel_default")]
    held = Lease.from_json(store.get(f"mirpanel.ledger.{scope}.lease"))
    assert held is not None
    now = lease_module.DEFAULT_CLOCK.time()
    store.set(f"mirpanel.ledger.{scope}.lease", Lease(held.owner, held.token, held.taken_at, now, 0.0, now).as_json())


def per_link(panel: SandboxPanel) -> Counter[str]:
    return Counter(order.link or "" for order in list(panel.state.orders.values()))
