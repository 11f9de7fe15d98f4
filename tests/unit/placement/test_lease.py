"""Issue 20: the lease of a ledger scope (placement/lease.py), step by step.

Where the order of two writers' steps is the point, a store or a clock runs the other writer's steps
at a chosen moment, so no test depends on thread scheduling.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.lease_clock import SkippingClock
from support.leases import KEY, OWNER_A, OWNER_B, ManualClock, StepStore, lease_of

from airflow_provider_mirpanel.placement.lease import (
    Lease,
    LeaseTiming,
    MirPanelLedgerUnreadableError,
    MirPanelScopeLostError,
    ScopeLease,
)
from airflow_provider_mirpanel.placement.ledger import FORMAT_ROW, LedgerEntry, LedgerState, PlacementLedger
from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore


def test_a_free_scope_is_claimed_after_the_claims_wait_and_then_keeps_others_out() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    mine = lease_of(store, OWNER_A, clock)

    claim = mine.claim()

    assert claim.held and claim.seconds == pytest.approx(LeaseTiming().claim_wait)
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


def test_the_skipping_clock_counts_what_a_claim_waits(lease_clock: SkippingClock) -> None:
    store = MemoryStateStore()
    assert ScopeLease(store, KEY, OWNER_A).claim().held
    assert lease_clock.sleeps == [pytest.approx(LeaseTiming().claim_wait, abs=0.05)]  # less what the write took


class CountingStore(MemoryStateStore):
    """A store that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.gets += 1
        return super().get(key, default)


def holder_of(store: MemoryStateStore, clock: ManualClock, owner: Any = OWNER_A) -> PlacementLedger:
    ledger = PlacementLedger(store, scope="spring", owner=owner, timing=LeaseTiming())
    assert ledger.lease is not None
    ledger.lease.clock = clock
    assert ledger.claim().held
    return ledger


def test_a_holder_leaves_a_snapshot_so_the_next_one_reads_it_and_not_every_page() -> None:
    store, clock = CountingStore(), ManualClock()
    first = holder_of(store, clock)
    first.load()
    for page in range(30):  # 30 pages of one entry each: a placement at a slow panel writes many small pages
        first.append({f"row-{page}": LedgerEntry(LedgerState.PLACED, "d", 1000 + page)})
    first.release()
    lease = Lease.from_json(store.get(KEY))
    assert lease is not None and lease.snapshot == {"pages": 30, "chunks": 1}

    second = holder_of(store, clock, OWNER_B)
    store.gets = 0
    entries = second.load()

    assert {key: entry.order for key, entry in entries.items()} == {f"row-{n}": 1000 + n for n in range(30)}
    assert store.gets == 2, "one snapshot chunk, then the first page after it (absent)"
    second.append({"row-30": LedgerEntry(LedgerState.SENDING, "d")})
    assert store.get("mirpanel.ledger.spring.30") is not None, "pages go on where they were"


def test_a_snapshot_that_cannot_be_read_whole_is_not_used() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    first = holder_of(store, clock)
    first.load()
    first.append({"row-1": LedgerEntry(LedgerState.PLACED, "d", 1001)})
    first.release()
    store.values.pop("mirpanel.ledger.spring.snap-1-0")

    entries = holder_of(store, clock, OWNER_B).load()

    assert entries["row-1"].order == 1001, "every page read instead"


def test_a_holder_that_wrote_fewer_pages_than_a_snapshot_has_chunks_keeps_the_older_snapshot() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    first = holder_of(store, clock)
    first.load()
    for start in range(0, 800, 100):  # 800 entries: a snapshot of 2 chunks
        first.append({f"row-{n}": LedgerEntry(LedgerState.PLACED, "d", 1000 + n) for n in range(start, start + 100)})
    first.release()

    second = holder_of(store, clock, OWNER_B)
    second.load()
    second.append({"row-800": LedgerEntry(LedgerState.PLACED, "d", 1800)})  # one page: cheaper to read than 2 chunks
    second.release()

    lease = Lease.from_json(store.get(KEY))
    assert lease is not None and lease.snapshot == {"pages": 8, "chunks": 2}
    assert holder_of(store, clock).load()["row-800"].order == 1800, "the page after the snapshot is read"


# -- work done while a claim waits to verify --------------------------------------------------------------------------


def test_a_claim_does_its_meanwhile_between_writing_and_verifying_and_waits_only_the_rest() -> None:
    store, clock = MemoryStateStore(), ManualClock()
    mine = lease_of(store, OWNER_A, clock)
    slept: list[float] = []
    seen: list[Any] = []

    def work() -> None:  # 0.2 s of reading, with the lease written and not yet verified
        seen.append((mine.held, mine.pending is not None and Lease.from_json(store.get(KEY)) == mine.pending))
        clock.now += 0.2

    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    clock.sleep = sleep  # type: ignore[method-assign]
    claim = mine.claim(work)

    assert seen == [(None, True)] and mine.pending is None
    assert claim.held and claim.seconds == pytest.approx(LeaseTiming().claim_wait)
    assert slept == [pytest.approx(LeaseTiming().claim_wait - 0.2)]


def test_work_longer_than_the_claims_wait_verifies_at_once_and_a_later_claim_still_wins() -> None:
    """Fischer's case with work in the wait: the other writer's claim lands during the work; it wins."""
    store, clock = MemoryStateStore(), ManualClock()
    first = lease_of(store, OWNER_A, clock)
    second = lease_of(StaleFirstRead(store), OWNER_B, clock)  # it read the scope free before the first wrote
    outcome: dict[str, bool] = {}

    def work() -> None:
        clock.now += 1.0  # longer than the wait: no sleep after it
        outcome["second"] = second.claim().held

    outcome["first"] = first.claim(work).held

    assert outcome == {"first": False, "second": True}
    assert Lease.from_json(store.get(KEY)).owner == OWNER_B  # type: ignore[union-attr]


def test_a_failing_meanwhile_still_verifies_and_releases_a_lease_it_won() -> None:
    store, clock = MemoryStateStore(), ManualClock()

    def refuse() -> None:
        raise ValueError("an invalid row")

    with pytest.raises(ValueError, match="an invalid row"):
        lease_of(store, OWNER_A, clock).claim(refuse)

    lease = Lease.from_json(store.get(KEY))
    assert lease is not None and lease.owner == OWNER_A and lease.released_at is not None
    assert lease_of(store, OWNER_B, clock).claim().held, "nobody waits for a lease that was never used"


def test_work_that_outlasts_the_lease_is_not_trusted() -> None:
    store, clock = MemoryStateStore(), ManualClock()

    def slow() -> None:
        clock.now += LeaseTiming().ttl

    claim = lease_of(store, OWNER_A, clock).claim(slow)

    assert not claim.held and claim.holder is None and "took over the lease's 60 s" in claim.note


def test_a_pending_claim_reads_the_ledger_and_its_snapshot_but_cannot_write_it() -> None:
    store, clock = CountingStore(), ManualClock()
    first = holder_of(store, clock)
    first.load()
    for page in range(3):
        first.append({f"row-{page}": LedgerEntry(LedgerState.PLACED, "d", 1000 + page)})
    first.release()
    second = PlacementLedger(store, scope="spring", owner=OWNER_B, timing=LeaseTiming())
    assert second.lease is not None
    second.lease.clock = clock
    read: dict[str, Any] = {}

    def prepare() -> None:
        store.gets = 0
        read.update({key: entry.order for key, entry in second.load().items()})
        read["gets"] = store.gets
        with pytest.raises(RuntimeError, match="not held"):
            second.append({"row-3": LedgerEntry(LedgerState.SENDING, "d")})

    assert second.claim(prepare).held
    assert read == {"row-0": 1000, "row-1": 1001, "row-2": 1002, "gets": 2}, "the snapshot, then page 3 (absent)"
    assert store.get("mirpanel.ledger.spring.3") is None, "nothing written before the claim held"
    second.append({"row-3": LedgerEntry(LedgerState.SENDING, "d")})
    assert store.get("mirpanel.ledger.spring.3") is not None
