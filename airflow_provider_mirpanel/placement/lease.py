"""The exclusive claim of a ledger scope: one writer at a time, with no rule for the DAG author.

A scope's ledger (:mod:`~airflow_provider_mirpanel.ledger`) lives in an asset state store, which
offers only get / set / delete: no compare-and-set, no insert-if-absent, no listing. Two writers
that both read a scope's pages, both find a key new and both send it would pay twice; two writers
that number their pages by what they read would overwrite each other's. So a placement first
*claims* the scope with a lease kept under ``<scope prefix>lease``, and writes pages only while
it holds it. The lease is taken by write-wait-verify (Fischer's mutual exclusion, the one lock a
last-write-wins register allows):

1. read the lease: held by another owner and not expired → the scope is busy (the caller waits);
2. write a lease with a fresh token;
3. wait :attr:`LeaseTiming.claim_wait` (doing meanwhile work that only reads, such as reading the
   ledger: it counts only if the claim holds), then read it again: still our token → ours; another
   token → that claim came later and won; nothing → the store cannot be read (fail closed).

**Assumptions** (docs/operators.md, "Concurrent writers of a scope"):

- *The claim's bound*: a claim's read in step 1 and its write in step 2 land within
  :attr:`LeaseTiming.write_bound` (0.25 s; a state-store trip takes 7–15 ms) of each other, and
  it waits longer than that (0.3 s) in step 3. So every claim that read the lease free before ours
  landed has landed before we verify, and the last writer alone sees its own token. Each claim
  measures its own read → write: one above the bound does not trust itself — it leaves its lease
  to expire (not even a later look of the same try takes it back) and tries again; a holder whose
  lease such a slow claim overwrote sees the other token at its next renewal and stops.
- *Clocks*: hosts' wall clocks agree within :attr:`LeaseTiming.skew` (5 s; NTP keeps them within
  milliseconds). A lease is free to others only ``skew`` after its ``expires``.
- *The holder stops in time*: it renews every ``ttl / 4`` and writes nothing — no mark, no page,
  no renewal — once ``ttl - write_bound`` has passed on its own monotonic clock since its last
  renewal began. So its last write lands before anybody else may claim.

The owner is ``(dag_id, run_id, task_id, map_index)`` — not the task instance's ``id``, which
changes every try: a later try of the holder (Airflow starts it only once the earlier try is over)
takes the lease back at once instead of waiting for it to expire; the lease records the try that
took it. Nothing here talks to the panel.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from airflow_provider_mirpanel.exceptions import MirPanelError

#: The lease's key below a scope's page prefix (pages are numbered: no page key ends in a word).
LEASE_SUFFIX = "lease"


class LeaseStore(Protocol):
    """What a lease needs of a state store accessor."""

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""

    def set(self, key: str, value: Any) -> None:
        """Write ``value`` under ``key``."""


class LeaseClock(Protocol):
    """Wall time (shared between hosts), monotonic time (this process's) and waiting."""

    def time(self) -> float:
        """Return the wall-clock time, in epoch seconds."""

    def monotonic(self) -> float:
        """Return this process's monotonic time, in seconds."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemLeaseClock:
    """The real clocks: ``time.time``, ``time.monotonic``, ``time.sleep``."""

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``."""
        time.sleep(seconds)


#: The clock leases use unless given one (tests replace it with one that does not sleep).
DEFAULT_CLOCK: LeaseClock = SystemLeaseClock()


class MirPanelScopeLostError(MirPanelError):
    """This writer can no longer trust that it holds its scope's lease: it stops writing and sending."""


class MirPanelLedgerUnreadableError(MirPanelError):
    """The scope's ledger cannot be read back (an inactive or undeclared asset reads as empty): fail closed."""


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds a lease: a task instance, across its tries."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> LeaseOwner:
        """Return the owner a task's context names (``"?"`` for what a bare ``op.execute(context)`` lacks)."""
        ti = context.get("ti")

        def field(name: str, default: Any) -> Any:
            value = getattr(ti, name, None)
            return default if value is None else value

        return cls(
            str(field("dag_id", "?")),
            str(field("run_id", "?")),
            str(field("task_id", "?")),
            int(field("map_index", -1)),
        )

    def as_json(self) -> dict[str, Any]:
        """Return the owner as stored in a lease."""
        return {"dag_id": self.dag_id, "run_id": self.run_id, "task_id": self.task_id, "map_index": self.map_index}

    @classmethod
    def from_json(cls, value: Any) -> LeaseOwner | None:
        """Return the owner a stored value names; None for a value that is not one."""
        if not isinstance(value, Mapping) or not all(isinstance(value.get(n), str) for n in _OWNER_TEXTS):
            return None
        map_index = value.get("map_index", -1)
        if not isinstance(map_index, int) or isinstance(map_index, bool):
            return None
        return cls(value["dag_id"], value["run_id"], value["task_id"], map_index)

    def __str__(self) -> str:
        mapped = f", map index {self.map_index}" if self.map_index >= 0 else ""
        return f"DAG {self.dag_id!r}, run {self.run_id!r}, task {self.task_id!r}{mapped}"


@dataclass(frozen=True)
class Lease:
    """A scope's lease as stored: who holds it, its token, and until when (epoch seconds)."""

    owner: LeaseOwner
    token: str
    taken_at: float
    renewed_at: float
    expires: float
    released_at: float | None = None
    try_number: int = 0
    #: Where the scope's latest snapshot is: ``{"pages": n, "chunks": c}`` (the ledger's; carried by every claim).
    snapshot: Mapping[str, int] | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the lease as stored."""
        return {
            "snapshot": dict(self.snapshot) if self.snapshot is not None else None,
            "owner": self.owner.as_json(),
            "token": self.token,
            "taken_at": self.taken_at,
            "renewed_at": self.renewed_at,
            "expires": self.expires,
            "released_at": self.released_at,
            "try_number": self.try_number,
        }

    @classmethod
    def from_json(cls, value: Any) -> Lease | None:
        """Return the lease a stored value describes; None for a value that is not one."""
        if not isinstance(value, Mapping) or (owner := LeaseOwner.from_json(value.get("owner"))) is None:
            return None
        times = [value.get(name) for name in ("taken_at", "renewed_at", "expires")]
        released, try_number = value.get("released_at"), value.get("try_number", 0)
        numbers = [time_ for time_ in times if isinstance(time_, (int, float)) and not isinstance(time_, bool)]
        if not isinstance(value.get("token"), str) or len(numbers) != len(times):
            return None
        if not (released is None or _is_number(released)) or not isinstance(try_number, int):
            return None
        taken, renewed, expires = (float(time_) for time_ in numbers)
        snapshot = value.get("snapshot")
        if not (isinstance(snapshot, Mapping) and all(isinstance(snapshot.get(n), int) for n in ("pages", "chunks"))):
            snapshot = None
        return cls(
            owner,
            value["token"],
            taken,
            renewed,
            expires,
            None if released is None else float(released),
            try_number,
            None if snapshot is None else {"pages": snapshot["pages"], "chunks": snapshot["chunks"]},
        )

    def held(self, now: float) -> bool:
        """Return whether a writer holds the scope at wall time ``now`` (not released, not expired)."""
        return self.released_at is None and self.expires > now

    @property
    def last_written(self) -> float:
        """Return when the holder last wrote the lease: its release, else its last renewal (epoch s)."""
        return self.released_at if self.released_at is not None else self.renewed_at

    def keeps_out(self, owner: LeaseOwner, try_number: int, now: float, skew: float) -> bool:
        """Whether this lease keeps ``owner``'s try ``try_number`` from claiming at wall time ``now``.

        A released lease keeps nobody out, nor does one expired for ``skew`` seconds, nor one an
        earlier try of ``owner`` took (that try is over). The same try's own lease keeps it out: it
        is a claim that did not trust itself, left to expire.
        """
        if self.released_at is not None or now >= self.expires + skew:
            return False
        return not (self.owner == owner and try_number > self.try_number)

    def describe(self) -> str:
        """``DAG 'a', run 'b', task 'c' (since 12:00:01 UTC, lease until 12:01:01 UTC)``."""
        return f"{self.owner} (since {_clock_text(self.taken_at)}, lease until {_clock_text(self.expires)})"


@dataclass(frozen=True)
class LeaseTiming:
    """The lease's numbers, in seconds (see the module's assumptions)."""

    ttl: float = 60.0
    claim_wait: float = 0.3
    write_bound: float = 0.25
    skew: float = 5.0

    def __post_init__(self) -> None:
        if self.claim_wait <= self.write_bound:
            raise ValueError("claim_wait must exceed write_bound")
        if self.ttl < 4 * (self.claim_wait + self.write_bound):
            raise ValueError(
                f"a lease must last at least {4 * (self.claim_wait + self.write_bound):g} s, got {self.ttl:g}"
            )

    @property
    def renew_every(self) -> float:
        """Return how often the holder renews its lease: a quarter of ``ttl``."""
        return self.ttl / 4


@dataclass(frozen=True)
class Claim:
    """The outcome of one attempt to claim a scope."""

    held: bool
    holder: Lease | None = None  # who holds the scope when this attempt did not get it
    note: str = ""  # why it did not get it, when nobody else holds it
    seconds: float = 0.0  # what the attempt took


class ScopeLease:
    """The lease of one scope, as one writer sees it: claim, keep alive while writing, release.

    :param store: the ledger asset's state store accessor.
    :param key: the lease's key (``<scope prefix>lease``).
    :param owner: the task instance claiming.
    :param timing: the lease's numbers.
    :param clock: wall and monotonic time, and waiting.
    :param try_number: the claiming task's try.
    """

    def __init__(
        self,
        store: LeaseStore,
        key: str,
        owner: LeaseOwner,
        timing: LeaseTiming | None = None,
        clock: LeaseClock | None = None,
        try_number: int = 1,
    ):
        self.store = store
        self.key = key
        self.owner = owner
        self.try_number = try_number
        self.timing = timing or LeaseTiming()
        self.clock = clock or DEFAULT_CLOCK
        self.held: Lease | None = None
        #: The lease a claim wrote and has not verified yet (while its ``meanwhile`` runs).
        self.pending: Lease | None = None
        self._renewed = 0.0  # monotonic time the last claim or renewal began
        self._deadline = 0.0  # monotonic time after which this writer writes nothing
        self._lost: str | None = None  # why this writer stopped trusting its lease, for good

    def read(self) -> Lease | None:
        """Return the stored lease, or None."""
        return Lease.from_json(self.store.get(self.key))

    def claim(self, meanwhile: Callable[[], object] | None = None) -> Claim:
        """Try once to claim the scope by write-wait-verify (about ``claim_wait`` when it is free).

        :param meanwhile: work to do while the claim waits to verify, instead of sleeping: it may read
            the scope's ledger (:attr:`pending` names the lease written), never write it. When it
            raises, the claim is still verified, and released when it was ours, before the error
            goes on.
        """
        start = self.clock.monotonic()
        current = self.read()
        now = self.clock.time()
        if current is not None and current.keeps_out(self.owner, self.try_number, now, self.timing.skew):
            return Claim(False, holder=current, seconds=self.clock.monotonic() - start)
        snapshot = current.snapshot if current is not None else None  # every claim carries the snapshot on
        mine = Lease(self.owner, uuid.uuid4().hex, now, now, now + self.timing.ttl, None, self.try_number, snapshot)
        self.store.set(self.key, mine.as_json())
        if self.clock.monotonic() - start > self.timing.write_bound:
            return Claim(
                False,
                note=f"the claim's read and write took over {self.timing.write_bound:g} s (a slow "
                "store): not trusted, tried again later",
                seconds=self.clock.monotonic() - start,
            )
        written = self.clock.monotonic()
        failure: Exception | None = None
        self.pending = mine
        try:
            if meanwhile is not None:
                meanwhile()
        except Exception as error:  # a kill (BaseException) goes on at once: the lease is left to expire
            failure = error
        finally:
            self.pending = None
        self.clock.sleep(max(0.0, self.timing.claim_wait - (self.clock.monotonic() - written)))
        claim = self._verify(mine, start)
        if failure is not None:
            self.release()
            raise failure
        return claim

    def _verify(self, mine: Lease, start: float) -> Claim:
        """Read the lease back, ``claim_wait`` after writing ``mine``: ours when it still holds our token."""
        verified = self.read()
        seconds = self.clock.monotonic() - start
        if verified is None:
            raise MirPanelLedgerUnreadableError(
                f"the ledger's lease {self.key!r} was written but reads back as absent: the ledger asset's state "
                "store cannot be read (an inactive or undeclared asset reads as empty), so the ledger cannot be "
                "trusted; no order was sent"
            )
        if verified.token != mine.token:
            return Claim(False, holder=verified, seconds=seconds)
        if seconds >= self.timing.ttl - self.timing.write_bound:  # it may have expired while the claim waited
            return Claim(
                False,
                note=f"the work done while claiming took over the lease's {self.timing.ttl:g} s: not trusted, "
                "tried again later",
                seconds=seconds,
            )
        self.held = mine
        self._renewed = start
        self._deadline = start + self.timing.ttl - self.timing.write_bound
        return Claim(True, seconds=seconds)

    def keep_alive(self) -> None:
        """Before a write: renew the lease when due; :class:`MirPanelScopeLostError` when it cannot be trusted."""
        if self._lost is not None:
            raise MirPanelScopeLostError(self._lost)
        if self.held is None:
            raise RuntimeError(f"the lease {self.key!r} is not held: claim() first")
        start = self.clock.monotonic()
        if start >= self._deadline:
            raise self._lose(
                f"the lease {self.key!r} was not renewed within {self.timing.ttl:g} s (the task was "
                "paused or the store was slow): another writer may hold it now"
            )
        if start - self._renewed < self.timing.renew_every:
            return
        current = self.read()
        if current is None or current.token != self.held.token:
            taker = current.describe() if current is not None else "nobody (it was removed)"
            raise self._lose(f"the lease {self.key!r} is now held by {taker}")
        now = self.clock.time()
        renewed = replace(self.held, renewed_at=now, expires=now + self.timing.ttl)
        self.store.set(self.key, renewed.as_json())
        if self.clock.monotonic() > self._deadline + self.timing.write_bound:  # landed after the old lease ended
            raise self._lose(f"renewing the lease {self.key!r} took too long: another writer may hold it now")
        self.held = renewed
        self._renewed = start
        self._deadline = start + self.timing.ttl - self.timing.write_bound

    def release(self, snapshot: Mapping[str, int] | None = None) -> None:
        """Release the lease, unless this writer no longer trusts that it holds it (then it expires).

        :param snapshot: where the snapshot this holder wrote is (kept in the lease for the next holder).
        """
        held, self.held = self.held, None
        if held is None or self._lost is not None:
            return
        self._lost = f"the lease {self.key!r} was released: nothing more is written"
        if self.clock.monotonic() >= self._deadline:
            return
        current = self.read()
        if current is None or current.token != held.token:
            return
        now = self.clock.time()
        released = replace(held, renewed_at=now, expires=0.0, released_at=now, snapshot=snapshot or held.snapshot)
        self.store.set(self.key, released.as_json())

    def _lose(self, why: str) -> MirPanelScopeLostError:
        """Stop trusting the lease for good: this writer writes and sends nothing more."""
        self.held = None
        self._lost = (
            f"{why}; this writer stops writing and sending (the orders in flight stay of unknown outcome, never resent)"
        )
        return MirPanelScopeLostError(self._lost)


_OWNER_TEXTS = ("dag_id", "run_id", "task_id")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clock_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
