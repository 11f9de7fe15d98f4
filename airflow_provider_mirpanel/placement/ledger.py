"""The exactly-once ledger of paid orders: what each order key became, across task retries and DAG runs.

The Panel API has no idempotency key: a second ``add`` is a second paid order. So before an order
is sent, the ledger records that its placement *started* (``sending``); once the panel answers, it
records the order ID (or the refusal). A later try (or run) can then tell the orders it must not
send again (placed, or maybe placed) from those it may (refused by the panel, or never sent).

**Pages, not one value per order.** Every write to a state store is a trip through the
supervisor and the api-server (7–15 ms, one at a time), so the ledger writes *pages*: the
``sending`` marks of a window of orders in one write before any of them is sent, and later the
outcomes of the windows that have ended in another. A page is a list of compact rows; the ledger
is the pages read in order, a later row of a key overriding an earlier one. A crash leaves the
orders whose outcomes were not written as ``sending``: possibly placed, never resent — including
the few that were marked but not yet sent, which is the price of a window.

Where the ledger lives is its *scope*:

- **per task instance** (the default): Airflow's ``task_state_store`` (3.3), which survives the
  task's retries but not a new DAG run;
- **a named scope** (``ledger_scope="black_friday"``): the asset state store of a ledger asset
  (:func:`ledger_asset`), which survives DAG runs; the scope's name prefixes the keys, so an order
  key placed by any earlier run of that scope is never placed again. Any number of runs, DAGs
  and mapped tasks may use one scope at once: a writer claims the scope's lease
  (:mod:`~airflow_provider_mirpanel.placement.lease`) before it reads the pages, and writes pages only while
  it holds it, so pages are numbered by one writer at a time and a key is sent at most once.

A scope's first page written under a lease starts with a *format row* that the release before
leases cannot read (it stops with a TypeError before sending anything): a worker still running
that release beside an upgraded one refuses the scope instead of writing around the lease.

Nothing here talks to the panel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.placement.lease import LEASE_SUFFIX, Claim, LeaseOwner, LeaseTiming, ScopeLease
from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore, StateStore, store_of
from airflow_provider_mirpanel.version_compat import Asset

#: Prefix of the ledger's pages in a state store. Renaming it would make in-flight retries and
#: later runs forget what earlier ones placed.
PAGE_PREFIX = "mirpanel.ledger."
#: Where the first release kept one value per order (``task_state_store`` only): read on a retry
#: that finds no pages, so an upgrade in the middle of a task's retries resends nothing.
LEGACY_PREFIX = "mirpanel.order."
MAX_SCOPE_LENGTH = 200
#: Orders per page: a page stays far below the stores' 64 KB warning (keys ≤ 200 characters,
#: errors ≤ 150).
PAGE_SIZE = 100
_MAX_ERROR = 150
#: Entries per chunk of a scope's snapshot (about 40 KB, below the stores' 64 KB warning).
SNAPSHOT_ROWS = 400
#: The first row of a scope's first page written under a lease. Its state is a list: the release
#: before leases fails on it (``unhashable type``) while loading, before it sends anything.
FORMAT_ROW: list[Any] = [
    "~mirpanel.ledger.format",
    ["leased", 1],
    "",
    None,
    None,
    "this scope's pages are written under a lease (airflow-provider-mirpanel 0.3+): upgrade "
    "every worker that places into it",
]


class LedgerState(str, Enum):
    """What the ledger knows about one order key."""

    SENDING = "sending"  # an add was (about to be) sent; no answer recorded: it may exist
    PLACED = "placed"  # the panel returned this order ID
    UNKNOWN = "unknown"  # the add may have reached the panel but its reply was lost
    REFUSED = "refused"  # the panel refused it, it was certainly never sent, or a user said so

    @property
    def unresolved(self) -> bool:
        """Whether nobody knows if the panel holds this order."""
        return self in (LedgerState.SENDING, LedgerState.UNKNOWN)


@dataclass(frozen=True)
class LedgerEntry:
    """One order key's ledger value: its state, a digest of its parameters, its order ID."""

    state: LedgerState
    digest: str
    order: int | None = None
    cost: float | None = None
    error: str | None = None

    def row(self, key: str) -> list[Any]:
        """Return the entry as a page row: ``[key, state, digest, order, cost, error]``."""
        error = self.error[:_MAX_ERROR] if self.error else None
        return [key, self.state.value, self.digest, self.order, self.cost, error]

    @classmethod
    def from_row(cls, row: Any) -> tuple[str, LedgerEntry] | None:
        """Return the key and entry of a page row; None for a row this ledger did not write."""
        if not isinstance(row, list) or len(row) != 6 or not isinstance(row[1], str):
            return None
        if row[1] not in LedgerState._value2member_map_:
            return None
        key, state, digest_, order, cost, error = row
        return str(key), cls(LedgerState(state), str(digest_), order, cost, error)

    @classmethod
    def from_json(cls, value: Any) -> LedgerEntry | None:
        """Return the entry of a first-release per-order value; None for a value the ledger did not write."""
        if not isinstance(value, Mapping) or value.get("state") not in LedgerState._value2member_map_:
            return None
        return cls(
            LedgerState(value["state"]),
            str(value.get("digest", "")),
            value.get("order"),
            value.get("cost"),
            value.get("error"),
        )


def ledger_asset(mirpanel_conn_id: str) -> Asset:
    """Return the asset whose state store keeps the scoped ledgers of one panel connection.

    One asset per connection: the same key on two panels names two different orders.
    """
    return Asset(name=f"mirpanel_order_ledger__{mirpanel_conn_id}", uri=f"mirpanel://{mirpanel_conn_id}/order-ledger")


def check_scope(scope: Any) -> str:
    """Return a ledger scope's name, or :class:`MirPanelInputError` (before anything is sent)."""
    if not isinstance(scope, str) or not scope.strip() or len(scope) > MAX_SCOPE_LENGTH:
        raise MirPanelInputError(
            f"ledger_scope must be text of 1..{MAX_SCOPE_LENGTH} characters, got {scope!r}; no order was sent"
        )
    return scope


def try_number(context: Mapping[str, Any]) -> int:
    """Return the task's try number (1 on the first try, and for a bare ``op.execute(context)``)."""
    return int(getattr(context.get("ti"), "try_number", None) or 1)


class PlacementLedger:
    """A ledger of order keys in a state store, in one scope, written in pages.

    :param store: ``context["task_state_store"]``, an asset's state store accessor, or a
        :class:`~airflow_provider_mirpanel.taskstate.MemoryStateStore`.
    :param scope: the scope's name; None for the per-task-instance ledger.
    :param durable: whether ``store`` survives task retries (False for the in-memory stand-in).
    :param blind: a retry with no store at all: what earlier tries placed cannot be accounted for,
        so every order counts as possibly placed.
    :param retry: whether this is a retry (a try number above 1): only then can first-release
        per-order values exist for this task.
    :param owner: the task instance writing, for a scope's lease (None: no lease, one writer only).
    :param timing: the lease's numbers.
    """

    def __init__(
        self,
        store: StateStore,
        scope: str | None = None,
        durable: bool = True,
        blind: bool = False,
        retry: bool = False,
        owner: LeaseOwner | None = None,
        timing: LeaseTiming | None = None,
        try_number: int = 1,
    ):
        self.store = store
        self.scope = scope
        self.durable = durable
        self.blind = blind
        self.retry = retry
        self._prefix = PAGE_PREFIX if scope is None else f"{PAGE_PREFIX}{quote(scope, safe='')}."
        self._pages: int | None = None  # pages in the store, once loaded
        self._formatted = False  # whether the loaded pages hold FORMAT_ROW
        self._known: dict[str, LedgerEntry] | None = None  # every key's latest entry, once loaded (kept up to date)
        self._snapshot_pages = 0  # the pages the snapshot read at load covers
        self.lease = (
            ScopeLease(store, self._prefix + LEASE_SUFFIX, owner, timing, try_number=try_number)
            if scope is not None and owner is not None
            else None
        )

    @classmethod
    def from_context(
        cls, context: Mapping[str, Any], scope: str | None = None, asset: Any = None, timing: LeaseTiming | None = None
    ) -> PlacementLedger:
        """Return the ledger of a task's context: the scope's (under its lease), else the task's own.

        Without any store, an in-memory ledger (``durable`` False), ``blind`` on a retry.
        """
        retry = try_number(context) > 1
        if scope is not None:
            stores = context.get("asset_state_store")
            if stores is None:
                raise MirPanelInputError(
                    "ledger_scope needs Airflow's asset state store (Airflow 3.3+; "
                    "context['asset_state_store']), which this task does not have; "
                    "no order was sent"
                )
            try:
                store = stores[asset]
            except KeyError:
                raise MirPanelInputError(
                    f"the ledger asset {getattr(asset, 'name', asset)!r} is not among this task's inlets, so its "
                    "state store cannot be reached. A mapped task gets its inlets from partial(): give "
                    "mirpanel_conn_id (and ledger_asset, if any) to partial(), not to expand(); or pass "
                    "ledger_asset= explicitly. No order was sent"
                ) from None
            return cls(
                store,
                scope=check_scope(scope),
                owner=LeaseOwner.of(context),
                timing=timing,
                try_number=try_number(context),
            )
        store = store_of(context)
        if store is None:
            return cls(MemoryStateStore(), durable=False, blind=retry)
        return cls(store, retry=retry)

    @property
    def where(self) -> str:
        """How messages name the ledger: ``ledger scope 'black_friday'`` or ``this task's ledger``."""
        return f"ledger scope {self.scope!r}" if self.scope is not None else "this task's ledger"

    def claim(self, meanwhile: Callable[[], object] | None = None) -> Claim:
        """Try once to claim the scope's lease (see :class:`~airflow_provider_mirpanel.placement.lease.ScopeLease`).

        :param meanwhile: work that may read this ledger, done while the claim waits to verify.
        """
        if self.lease is None:
            if meanwhile is not None:
                meanwhile()
            return Claim(True)
        return self.lease.claim(meanwhile)

    def keep_alive(self) -> None:
        """Renew the scope's lease when due; raises when this writer can no longer trust it holds it."""
        if self.lease is not None:
            self.lease.keep_alive()

    def release(self) -> None:
        """Release the scope's lease (a no-op without one), leaving a snapshot of the scope when pages were written.

        The snapshot is every key's latest entry in chunks of :data:`SNAPSHOT_ROWS` rows, written under the
        lease, and named in the released lease: the next holder reads it and only the pages after it, not the
        scope's every page. Pages are never removed, so a holder that read an older snapshot still reads right.
        """
        if self.lease is None:
            return
        snapshot = None
        new_pages = (self._pages or 0) - self._snapshot_pages
        chunks = -(-len(self._known or ()) // SNAPSHOT_ROWS)
        # a new snapshot only when reading the pages since the last one would cost more reads than it does
        if self.lease.held is not None and self._known is not None and new_pages > 0 and new_pages >= chunks:
            try:
                snapshot = self._write_snapshot(self._known, self._pages or 0)
            except Exception:  # the lease then keeps pointing at the older snapshot: slower, never wrong
                snapshot = None
        self.lease.release(snapshot)

    def _snapshot_key(self, pages: int, chunk: int) -> str:
        return f"{self._prefix}snap-{pages}-{chunk}"  # no page key ends so: pages end in a number

    def _write_snapshot(self, entries: Mapping[str, LedgerEntry], pages: int) -> dict[str, int]:
        rows = [entry.row(key) for key, entry in entries.items()]
        chunks = (len(rows) + SNAPSHOT_ROWS - 1) // SNAPSHOT_ROWS
        for chunk in range(chunks):
            self.keep_alive()
            self.store.set(self._snapshot_key(pages, chunk), rows[chunk * SNAPSHOT_ROWS : (chunk + 1) * SNAPSHOT_ROWS])
        return {"pages": pages, "chunks": chunks}

    def _read_snapshot(self, entries: dict[str, LedgerEntry]) -> int:
        """Read the held lease's snapshot into ``entries``; the first page after it (0 without one)."""
        held = (self.lease.held or self.lease.pending) if self.lease is not None else None
        if held is None or held.snapshot is None:
            return 0
        pages, chunks = held.snapshot["pages"], held.snapshot["chunks"]
        read: dict[str, LedgerEntry] = {}
        for chunk in range(chunks):
            rows = self.store.get(self._snapshot_key(pages, chunk))
            if not isinstance(rows, list):
                return 0  # a snapshot that cannot be read whole is not used: every page is read instead
            for row in rows:
                parsed = LedgerEntry.from_row(row)
                if parsed is not None:
                    read[parsed[0]] = parsed[1]
        entries.update(read)
        self._formatted = True  # only a writer under a lease writes snapshots: its pages start with the format row
        return pages

    def load(self, keys: Iterable[str] = ()) -> dict[str, LedgerEntry]:
        """Every key's latest entry, reading the pages in order (one read per page, plus one).

        On a retry of a per-task ledger that has no pages yet, the first release's per-order values
        of ``keys`` are read too. A scope under a lease is read by its holder, or by a claim while it waits
        to verify (what it read counts only if the claim holds: nobody else writes the scope meanwhile).
        """
        if self.lease is not None and self.lease.held is None and self.lease.pending is None:
            raise RuntimeError("a scope's ledger is read only by the holder of its lease: claim() first")
        entries: dict[str, LedgerEntry] = {}
        page = self._snapshot_pages = self._read_snapshot(entries)
        while (rows := self.store.get(f"{self._prefix}{page}")) is not None:
            if page % 50 == 49 and (self.lease is None or self.lease.pending is None):
                self.keep_alive()  # a long ledger is read under a lease renewed in time (a claim's only once verified)
            for row in rows if isinstance(rows, list) else ():
                self._formatted = self._formatted or row == FORMAT_ROW
                parsed = LedgerEntry.from_row(row)
                if parsed is not None:
                    entries[parsed[0]] = parsed[1]
            page += 1
        self._pages = page
        if page == 0 and self.retry and self.scope is None:
            for key in keys:
                legacy = LedgerEntry.from_json(self.store.get(LEGACY_PREFIX + key))
                if legacy is not None:
                    entries[key] = legacy
        self._known = dict(entries)
        return entries

    def append(self, entries: Mapping[str, LedgerEntry]) -> int:
        """Write ``entries`` as a new page (one write); its number.

        At most :data:`PAGE_SIZE` entries. Once it returns, the entries are in the ledger: for
        ``sending`` marks, call it before sending, never after.
        """
        if len(entries) > PAGE_SIZE:
            raise ValueError(f"a ledger page holds at most {PAGE_SIZE} entries, got {len(entries)}")
        if self._pages is None:
            self.load()
        self.keep_alive()
        number = self._pages or 0
        rows = [entry.row(key) for key, entry in entries.items()]
        if self.lease is not None and not self._formatted:
            rows.insert(0, FORMAT_ROW)
        self.store.set(f"{self._prefix}{number}", rows)
        self._formatted = self._formatted or self.lease is not None
        self._pages = number + 1
        if self._known is not None:
            self._known.update(entries)
        return number

    def unresolved(self, entries: Mapping[str, LedgerEntry] | None = None) -> dict[str, LedgerEntry]:
        """Return the keys whose outcome nobody knows (``sending`` or ``unknown``), of ``entries`` (default: loaded)."""
        entries = self.load() if entries is None else entries
        return {key: entry for key, entry in entries.items() if entry.state.unresolved}

    def resolve(
        self,
        resolutions: Mapping[str, int | None],
        confirm: Callable[[Mapping[str, int]], None] | None = None,
        entries: Mapping[str, LedgerEntry] | None = None,
    ) -> dict[str, LedgerEntry]:
        """Record what a user found on the panel: each key's order ID, or (None) that it was not placed.

        A key resolved as placed is returned as placed by later tries and runs, without a request;
        one resolved as not placed is placed by the next try or run that has it. Keys without an
        entry, and placed keys given another order ID, are refused before anything is written;
        then ``confirm`` is called with the order IDs given (it raises to refuse them). ``entries``
        are what :meth:`load` returned just before, when the caller has them.
        """
        entries = self.load() if entries is None else entries
        missing = [key for key in resolutions if key not in entries]
        if missing:
            raise MirPanelInputError(
                f"keys {', '.join(map(repr, missing))} have no entry in {self.where}: nothing to "
                "resolve; nothing was written"
            )
        for key, order_id in resolutions.items():
            entry = entries[key]
            if entry.state is LedgerState.PLACED and entry.order != order_id:
                raise MirPanelInputError(
                    f"key {key!r} is already recorded as order {entry.order} in {self.where}; nothing was written"
                )
        if confirm is not None:
            confirm({key: order_id for key, order_id in resolutions.items() if order_id is not None})
        resolved = {
            key: LedgerEntry(LedgerState.PLACED, entries[key].digest, order_id, entries[key].cost)
            if order_id is not None
            else LedgerEntry(LedgerState.REFUSED, entries[key].digest, error="resolved by a user: not placed")
            for key, order_id in resolutions.items()
        }
        items = list(resolved.items())
        for start in range(0, len(items), PAGE_SIZE):
            self.append(dict(items[start : start + PAGE_SIZE]))
        return resolved
