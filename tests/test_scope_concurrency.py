"""Issue 20: a ledger scope holds with any number of concurrent writers, and no rule to remember.

The lease (``airflow_provider_mirpanel/placement/lease.py``) is driven step by step where the order of two
writers' steps is the point (a store that runs the other writer's steps at a chosen moment), and
end to end against the sandbox panel, whose own order list is the evidence: each row bought once,
every outcome in the ledger.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from airflow_compat import needs_state_stores
from lease_clock import SkippingClock

from airflow_provider_mirpanel import lease as lease_module
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.placement.lease import (
    Lease,
    LeaseOwner,
    LeaseTiming,
    MirPanelLedgerUnreadableError,
    MirPanelScopeLostError,
    ScopeLease,
)
from airflow_provider_mirpanel.placement.ledger import FORMAT_ROW, LedgerEntry, LedgerState, PlacementLedger, ledger_asset
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator, ResolveOrdersOperator
from airflow_provider_mirpanel.operators.scoped import LEDGER_CLAIM_XCOM_KEY, MirPanelScopeBusyError
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.taskstate import MemoryAssetStores, MemoryStateStore
from airflow_provider_mirpanel.triggers.scope import LedgerScopeTrigger
from airflow_provider_mirpanel.version_compat import TaskDeferred

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


# -- the lease, step by step ------------------------------------------------------------------------


def test_a_free_scope_is_claimed_after_the_claims_wait_and_then_keeps_others_out() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    mine = lease_of(store, OWNER_A, clock)

    claim = mine.claim()

    assert claim.held and claim.seconds == LeaseTiming().claim_wait
    other = lease_of(store, OWNER_B, clock).claim()
    assert not other.held and other.holder is not None and other.holder.owner == OWNER_A
    assert "DAG 'campaign', run 'run_a', task 'place'" in other.holder.describe()


def test_two_claims_that_both_read_the_scope_free_end_with_exactly_one_holder() -> None:
    """Fischer's case: both read "free" before either writes; the later write wins, the earlier sees it."""
    store, clock = MemoryStateStore(), ManualClock()
    first = lease_of(store, OWNER_A, clock)
    second = lease_of(StaleFirstRead(store), OWNER_B, clock)  # its read happened before the first's write
    outcome: dict[str, bool] = {}

    def second_claims() -> None:  # during the first's wait: the second writes, waits, verifies
        outcome["second"] = second.claim().held

    clock.during_sleep = second_claims
    outcome["first"] = first.claim().held

    assert outcome == {"first": False, "second": True}
    assert Lease.from_json(store.get(KEY)).owner == OWNER_B  # type: ignore[union-attr]


class StaleFirstRead:
    """A view of a store whose first ``get`` answers what the store held earlier (nothing)."""

    def __init__(self, store: MemoryStateStore) -> None:
        self.store, self.stale = store, True

    def get(self, key: str, default: Any = None) -> Any:
        if self.stale:
            self.stale = False
            return default
        return self.store.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.store.set(key, value)


def test_a_claim_whose_read_and_write_took_longer_than_the_bound_does_not_trust_itself() -> None:
    store, clock = StepStore(), ManualClock()

    def slow_store() -> None:
        clock.now += LeaseTiming().write_bound + 0.5

    store.interlude = slow_store
    claim = lease_of(store, OWNER_A, clock).claim()

    assert not claim.held and claim.holder is None and "not trusted" in claim.note


def test_a_claim_that_did_not_trust_itself_is_not_taken_back_by_the_same_try_before_it_expires() -> None:
    """Its write may have overwritten a holder's lease: that holder must see it at its renewal, and stop."""
    store, clock = StepStore(), ManualClock()
    slow = lease_of(store, OWNER_A, clock)

    def slow_store() -> None:
        clock.now += LeaseTiming().write_bound + 0.5

    store.interlude = slow_store
    assert not slow.claim().held
    again = lease_of(store, OWNER_A, clock)  # the same try, e.g. resumed after a deferral
    claim = again.claim()
    assert not claim.held and claim.holder is not None and claim.holder.owner == OWNER_A
    clock.now += LeaseTiming().ttl + LeaseTiming().skew
    assert again.claim().held, "once it has expired"


def test_a_holder_whose_lease_was_taken_stops_before_its_next_write() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    holder = lease_of(store, OWNER_A, clock)
    assert holder.claim().held
    clock.now += LeaseTiming().ttl + LeaseTiming().skew + 1  # the holder was paused past its lease
    assert lease_of(store, OWNER_B, clock).claim().held

    with pytest.raises(MirPanelScopeLostError, match="not renewed within"):
        holder.keep_alive()
    with pytest.raises(MirPanelScopeLostError):
        holder.keep_alive()  # for good: it never writes again


def test_a_holder_renews_its_lease_and_sees_a_taker() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    holder = lease_of(store, OWNER_A, clock)
    assert holder.claim().held
    clock.now += LeaseTiming().renew_every + 1
    holder.keep_alive()
    renewed = Lease.from_json(store.get(KEY))
    assert renewed is not None and renewed.expires == clock.now + LeaseTiming().ttl

    taker = Lease(OWNER_B, "other", clock.now, clock.now, clock.now + 60)
    store.set(KEY, taker.as_json())  # a taker that broke the bound overwrote it
    clock.now += LeaseTiming().renew_every + 1
    with pytest.raises(MirPanelScopeLostError, match="run 'run_b'"):
        holder.keep_alive()


def test_an_expired_or_released_lease_frees_the_scope_and_the_holders_own_retry_takes_it_at_once() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    killed = lease_of(store, OWNER_A, clock)
    assert killed.claim().held  # then the try is killed: no release
    assert not lease_of(store, OWNER_B, clock).claim().held

    retry = lease_of(store, OWNER_A, clock, try_number=2)  # same (dag, run, task, map index): a later try
    assert retry.claim().held
    retry.release()
    released = Lease.from_json(store.get(KEY))
    assert released is not None and released.released_at is not None and released.expires == 0.0
    assert lease_of(store, OWNER_B, clock).claim().held


def test_a_store_that_cannot_be_read_back_fails_closed() -> None:
    class Forgetful(MemoryStateStore):
        def get(self, key: str, default: Any = None) -> Any:
            return default  # an inactive asset: every key reads as absent

    with pytest.raises(MirPanelLedgerUnreadableError, match="no order was sent"):
        lease_of(Forgetful(), OWNER_A, ManualClock()).claim()


def test_the_release_before_leases_cannot_read_a_page_written_under_a_lease() -> None:
    """The old ``LedgerEntry.from_row`` looked the state up in a dict: the format row's list stops it."""
    with pytest.raises(TypeError, match="unhashable"):
        FORMAT_ROW[1] in LedgerState._value2member_map_  # noqa: B015 - the old release's test, verbatim
    assert LedgerEntry.from_row(FORMAT_ROW) is None


def test_pages_of_the_release_before_leases_are_read_and_continued() -> None:
    """An upgrade in the middle of a campaign: old pages count, new pages follow them, with the format row."""
    store = MemoryStateStore()
    store.set("mirpanel.ledger.spring.0", [LedgerEntry(LedgerState.PLACED, "d1", 1001).row("row-1")])
    ledger = PlacementLedger(store, scope="spring", owner=OWNER_A, timing=LeaseTiming())
    assert ledger.lease is not None
    ledger.lease.clock = ManualClock()
    assert ledger.claim().held

    assert ledger.load()["row-1"].order == 1001
    ledger.append({"row-2": LedgerEntry(LedgerState.SENDING, "d2")})
    assert store.get("mirpanel.ledger.spring.1")[0] == FORMAT_ROW
    ledger.append({"row-2": LedgerEntry(LedgerState.PLACED, "d2", 1002)})
    assert store.get("mirpanel.ledger.spring.2")[0] != FORMAT_ROW, "the format row is written once"
    assert {key: entry.order for key, entry in ledger.load().items()} == {"row-1": 1001, "row-2": 1002}


# -- placing, against the sandbox ---------------------------------------------------------------------


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
    return [{"key": f"{tag}-{i}", "service": service["service"], "link": f"https://example.com/{tag}/{i}",
             "quantity": service["min"]} for i in range(n)]


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


@needs_state_stores
def test_a_writer_that_finds_the_scope_held_defers_sends_nothing_and_places_once_it_is_free(
        panel: SandboxPanel) -> None:
    orders, assets = rows(panel, 5), MemoryAssetStores()
    hold(assets, OWNER_B)
    op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring", ledger_wait_poll=20)
    ti = TI()

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(assets, ti))

    assert panel.count() == 0, "nothing asked while the scope is held"
    assert deferred.value.method_name == "execute_after_wait"
    trigger = deferred.value.trigger
    assert isinstance(trigger, LedgerScopeTrigger)
    assert trigger.serialize() == ("airflow_provider_mirpanel.triggers.scope.LedgerScopeTrigger", {
        "asset_name": "mirpanel_order_ledger__mirpanel_default", "lease_key": KEY,
        "owner": {"dag_id": "campaign", "run_id": "run_a", "task_id": "place", "map_index": -1},
        "poll_interval": 20.0, "skew": 5.0, "give_up_at": pytest.approx(trigger.give_up_at), "try_number": 1})
    assert trigger.give_up_at is not None
    wait = (deferred.value.kwargs or {})["scope_wait"]
    assert trigger.give_up_at == pytest.approx(wait["since"] + 24 * 3600)
    assert wait["polls"] == 1 and "run 'run_b'" in wait["holders"][0]

    release(assets)
    records = op.execute_after_wait(context(assets, ti), event=None, scope_wait=wait)

    assert [r["state"] for r in records] == ["placed"] * 5
    assert per_link(panel) == Counter(o["link"] for o in orders)
    claim = ti.xcom[LEDGER_CLAIM_XCOM_KEY]
    assert claim["scope"] == "spring" and claim["polls"] == 1 and claim["holders"] == wait["holders"]
    assert claim["claim"] == LeaseTiming().claim_wait
    lease = Lease.from_json(assets[ledger_asset("mirpanel_default")].get(KEY))
    assert lease is not None and lease.owner == LeaseOwner("campaign", "run_a", "place") and lease.released_at


@needs_state_stores
def test_a_writer_gives_up_after_the_wait_timeout_naming_the_holder(
        panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    assets = MemoryAssetStores()
    holder = LeaseOwner("other_dag", "manual__1", "place", 3)

    class Renewing(SkippingClock):  # the holder renews its lease while the writer waits
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            hold(assets, holder)

    monkeypatch.setattr(lease_module, "DEFAULT_CLOCK", Renewing())
    hold(assets, holder)
    op = PlaceOrderOperator(task_id="place", orders=rows(panel, 2), ledger_scope="spring", deferrable=False,
                            ledger_wait_poll=60, ledger_wait_timeout=timedelta(minutes=5))

    with pytest.raises(MirPanelScopeBusyError) as error:
        op.execute(context(assets, TI()))

    assert "DAG 'other_dag', run 'manual__1', task 'place', map index 3" in str(error.value)
    assert "nothing was sent" in str(error.value)
    assert panel.count() == 0


@needs_state_stores
def test_the_holders_retry_takes_its_scope_back_without_waiting(panel: SandboxPanel) -> None:
    orders, assets = rows(panel, 3), MemoryAssetStores()
    hold(assets, LeaseOwner("campaign", "run_a", "place", -1))  # try 1 was killed holding it

    ti = TI(try_number=2)
    records = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring").execute(context(assets, ti))

    assert [r["state"] for r in records] == ["placed"] * 3
    assert ti.xcom[LEDGER_CLAIM_XCOM_KEY]["polls"] == 0


@needs_state_stores
def test_two_runs_placing_one_campaign_at_once_buy_each_row_once_and_lose_no_entry(
        panel: SandboxPanel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real threads, real waiting: whichever claims first places; the other waits, then finds all placed."""
    monkeypatch.setattr(lease_module, "DEFAULT_CLOCK", lease_module.SystemLeaseClock())
    orders, assets = rows(panel, 40), MemoryAssetStores()
    results: dict[str, Any] = {}

    def place(run_id: str) -> None:
        op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring", deferrable=False,
                                ledger_wait_poll=0.2)
        try:
            results[run_id] = op.execute(context(assets, TI(run_id=run_id)))
        except Exception as error:  # reported below
            results[run_id] = error

    threads = [threading.Thread(target=place, args=(run_id,)) for run_id in ("run_a", "run_b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert all(isinstance(result, list) for result in results.values()), results
    assert per_link(panel) == Counter(o["link"] for o in orders), "each row bought exactly once"
    for records in results.values():
        assert [r["state"] for r in records] == ["placed"] * 40
    held = {order.link: order_id for order_id, order in panel.state.orders.items()}
    ledger = PlacementLedger(assets[ledger_asset("mirpanel_default")], scope="spring")
    entries = ledger.load()
    assert {o["key"]: entries[o["key"]].order for o in orders} == {o["key"]: held[o["link"]] for o in orders}, \
        "no ledger entry lost"


@needs_state_stores
def test_a_mapped_placement_needs_a_key_in_every_row(panel: SandboxPanel) -> None:
    orders = [{k: v for k, v in row.items() if k != "key"} for row in rows(panel, 3)]
    op = PlaceOrderOperator(task_id="place", orders=orders, ledger_scope="spring")

    with pytest.raises(MirPanelInputError, match="rows 0, 1, 2 have no 'key'"):
        op.execute(context(MemoryAssetStores(), TI(map_index=1)))
    assert panel.count() == 0


@needs_state_stores
def test_mapped_placement_has_the_ledger_asset_among_its_inlets_from_parse_time() -> None:
    from airflow.sdk import DAG

    with DAG("mapped_campaign", schedule=None):
        mapped = PlaceOrderOperator.partial(task_id="place", ledger_scope="spring",
                                            mirpanel_conn_id="panel_b").expand(orders=[[], []])
        by_kwargs = PlaceOrderOperator.partial(task_id="place_kwargs").expand_kwargs(
            [{"orders": [], "ledger_scope": "spring"}])
        unscoped = PlaceOrderOperator.partial(task_id="unscoped", ledger_scope=None).expand(orders=[[]])

    assert ledger_asset("panel_b") in mapped.partial_kwargs["inlets"]
    assert ledger_asset("mirpanel_default") in by_kwargs.partial_kwargs["inlets"]
    assert unscoped.partial_kwargs["inlets"] == []


@needs_state_stores
def test_a_scope_whose_ledger_asset_is_not_an_inlet_is_refused_with_the_fix(panel: SandboxPanel) -> None:
    """A mapped mirpanel_conn_id: the task's inlets name another connection's ledger asset."""
    class Stores(MemoryAssetStores):
        def __getitem__(self, asset: Any) -> MemoryStateStore:
            raise KeyError(f"{asset!r} is not in this task's inlets or outlets")

    op = PlaceOrderOperator(task_id="place", orders=rows(panel, 1), ledger_scope="spring")
    with pytest.raises(MirPanelInputError, match=r"give\s+mirpanel_conn_id .* to partial\(\)"):
        op.execute(context(Stores(), TI(map_index=0)))
    assert panel.count() == 0


@needs_state_stores
def test_a_templated_connection_under_a_scope_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="plain connection ID"):
        PlaceOrderOperator(task_id="place", orders=[], ledger_scope="spring", mirpanel_conn_id="{{ params.conn }}")
    with pytest.raises(ValueError, match="ledger_lease"):
        PlaceOrderOperator(task_id="place", orders=[], ledger_scope="spring", ledger_lease=-1)


@needs_state_stores
def test_resolving_waits_for_a_placement_that_holds_the_scope(panel: SandboxPanel) -> None:
    assets = MemoryAssetStores()
    hold(assets, OWNER_B)
    op = ResolveOrdersOperator(task_id="resolve", ledger_scope="spring", resolutions={"row-1": "not_placed"})

    with pytest.raises(TaskDeferred):
        op.execute(context(assets, TI()))
    assert panel.count() == 0


def test_the_skipping_clock_counts_what_a_claim_waits(lease_clock: SkippingClock) -> None:
    store = MemoryStateStore()
    assert ScopeLease(store, KEY, OWNER_A).claim().held
    assert lease_clock.sleeps == [LeaseTiming().claim_wait]


# -- the trigger a waiting placement defers to ------------------------------------------------------


def trigger_events(trigger: LedgerScopeTrigger, reads: Callable[[], Any]) -> list[dict[str, Any]]:
    """Run the trigger to its event, its reads of the lease answered by ``reads`` (the triggerer's comms
    are Airflow's own; the lease's store is what the test controls)."""
    import asyncio

    async def read() -> Any:
        return reads()

    trigger._read = read  # type: ignore[method-assign]

    async def first() -> list[dict[str, Any]]:
        async for event in trigger.run():
            return [event.payload]
        return []

    return asyncio.run(first())


def test_the_scope_trigger_fires_once_the_lease_is_released() -> None:
    now = lease_module.SystemLeaseClock().time()
    held = Lease(OWNER_B, "theirs", now, now, now + 60).as_json()
    answers = [held, held, {**held, "expires": 0.0, "released_at": now}]
    trigger = LedgerScopeTrigger("ledger", KEY, OWNER_A.as_json(), poll_interval=0.01)

    assert trigger_events(trigger, lambda: answers.pop(0)) == [{"free": True}]
    assert answers == [], "it read the lease until it was free"


def test_the_scope_trigger_gives_up_at_the_tasks_timeout_so_the_task_names_the_holder() -> None:
    now = lease_module.SystemLeaseClock().time()
    held = Lease(OWNER_B, "theirs", now, now, now + 600).as_json()
    trigger = LedgerScopeTrigger("ledger", KEY, OWNER_A.as_json(), poll_interval=0.01, give_up_at=now - 1)

    assert trigger_events(trigger, lambda: held) == [{"free": False}]


def test_the_scope_trigger_hands_a_failed_read_to_the_tasks_own_claim() -> None:
    def broken() -> Any:
        raise RuntimeError("api-server unreachable")

    trigger = LedgerScopeTrigger("ledger", KEY, OWNER_A.as_json(), poll_interval=0.01)
    [event] = trigger_events(trigger, broken)
    assert event["free"] is None and "api-server unreachable" in event["error"]
