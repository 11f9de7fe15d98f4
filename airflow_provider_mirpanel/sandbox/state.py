"""What the sandbox panel holds: orders, refills and the balance, progressing on the sandbox clock.

Nothing ticks: an order's status and remains are computed from the clock when read, so a panel
holding 100,000 orders costs nothing while idle. Every change happens under ``PanelState.lock``
(the server's handlers and the test helpers both take it); reading needs no lock.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from airflow_provider_mirpanel.protocol import ORDER_TERMINAL_STATUSES, REFILL_TERMINAL_STATUSES, canonical_status
from airflow_provider_mirpanel.sandbox.clock import SandboxClock
from airflow_provider_mirpanel.sandbox.ids import FIRST_ORDER_ID, FIRST_REFILL_ID, CountingIds, IdSource

PENDING = "Pending"
IN_PROGRESS = "In progress"
COMPLETED = "Completed"
PARTIAL = "Partial"
CANCELED = "Canceled"
REJECTED = "Rejected"

Remains = int | str  # panels also report "Unknown"; set_order() can reproduce that


@dataclass(frozen=True)
class Lifecycle:
    """How orders and refills progress, in sandbox seconds.

    An order is Pending for ``pending_seconds``, then In progress while it delivers
    ``units_per_second`` (taking at most ``max_run_seconds``), then Completed. Every
    ``partial_every``-th order (0: none) ends Partial, leaving ``partial_share`` of its quantity
    undelivered and refunded. A refill is Pending for ``refill_pending_seconds``, then In progress
    for ``refill_run_seconds``, then Completed; every ``reject_refill_every``-th refill (0: none)
    is Rejected instead at the end of its pending time.
    """

    pending_seconds: float = 60.0
    units_per_second: float = 10.0
    max_run_seconds: float = 300.0
    partial_every: int = 5
    partial_share: float = 0.1
    refill_pending_seconds: float = 30.0
    refill_run_seconds: float = 60.0
    reject_refill_every: int = 4

    def run_seconds(self, units: int) -> float:
        """How long delivering ``units`` takes."""
        if self.units_per_second <= 0:
            return self.max_run_seconds
        return min(units / self.units_per_second, self.max_run_seconds)


class NotEnoughFunds(Exception):
    """The balance does not cover an order."""


class OrderReading(NamedTuple):
    """An order's status fields at one instant."""

    status: str
    remains: Remains
    charge: float
    start_count: int


@dataclass(slots=True, eq=False, repr=False)
class Order:
    """One order. ``status``, ``remains``, ``charge`` and ``start_count`` are read from the clock.

    ``quantity`` is None for orders without units (packages, subscriptions); they count as one
    unit. ``params`` holds the ``add`` parameters as sent (without key, action and service).
    ``cost`` is the order's price; ``charge`` is that minus refunds. ``paid`` is False for orders
    inserted by ``create_orders()``, which neither charge nor refund the balance. ``created`` is the
    sandbox time the order was placed.
    """

    id: int
    service: int
    link: str | None
    quantity: int | None
    params: dict[str, str]
    cost: float
    created: float
    _clock: SandboxClock
    _life: Lifecycle
    refunded: float = field(default=0.0, init=False)
    paid: bool = field(default=True, init=False)
    ends_partial: bool = field(default=False, init=False)
    _forced: tuple[str, Remains] | None = field(default=None, init=False)
    _start_count: int = field(init=False)

    def __post_init__(self) -> None:
        self._start_count = self.id * 7919 % 50_000  # deterministic, looks like a real follower count

    def __repr__(self) -> str:
        status, remains, charge, start_count = self.read()
        return (
            f"Order(id={self.id}, service={self.service}, link={self.link!r}, quantity={self.quantity}, "
            f"status={status!r}, remains={remains!r}, charge={charge}, start_count={start_count})"
        )

    @property
    def units(self) -> int:
        """What is delivered: the quantity, or one unit for orders without one."""
        return self.quantity or 1

    @property
    def finishes_at(self) -> float:
        """The sandbox time the order ends by itself (unless canceled or forced)."""
        return self.created + self._life.pending_seconds + self._life.run_seconds(self.units)

    @property
    def partial_remains(self) -> int:
        """What an order that ends Partial leaves undelivered."""
        return max(1, round(self.units * self._life.partial_share)) if self.ends_partial else 0

    def progress(self, now: float | None = None) -> tuple[str, Remains]:
        """(status, remains) at sandbox time ``now`` (default: the clock's now)."""
        if self._forced is not None:
            return self._forced
        life = self._life
        elapsed = (self._clock.now() if now is None else now) - self.created
        if elapsed < life.pending_seconds:
            return PENDING, self.units
        target = self.units - self.partial_remains
        run = life.run_seconds(self.units)
        done = (elapsed - life.pending_seconds) / run if run > 0 else 1.0
        if done >= 1:
            return (PARTIAL if self.ends_partial else COMPLETED), self.units - target
        return IN_PROGRESS, self.units - int(target * done)

    def refund_for(self, status: str, remains: Remains) -> float:
        """Return what goes back to the balance when the order ends with ``status`` and ``remains``."""
        canonical = canonical_status(status)
        if canonical == "Refunded":
            return self.cost
        if canonical in (PARTIAL, CANCELED) and isinstance(remains, int):
            return round(self.cost * min(remains, self.units) / self.units, 5)
        return 0.0

    def read(self, now: float | None = None) -> OrderReading:
        """Every status field at one instant."""
        status, remains = self.progress(now)
        charge = round(self.cost - self.refund_for(status, remains), 5)
        return OrderReading(status, remains, charge, self._start_count if self._started(status, remains) else 0)

    def _started(self, status: str, remains: Remains) -> bool:
        """Whether delivery had begun: no start count for Pending orders, nor ones canceled before starting."""
        canonical = canonical_status(status)
        if canonical == PENDING:
            return False
        return not (canonical in (CANCELED, "Refunded") and remains == self.units)

    @property
    def status(self) -> str:
        """The order's status now."""
        return self.progress()[0]

    @property
    def remains(self) -> Remains:
        """The units not delivered yet."""
        return self.progress()[1]

    @property
    def charge(self) -> float:
        """What the order costs now: its price minus refunds."""
        return self.read().charge

    @property
    def start_count(self) -> int:
        """The count before delivery began (0 while Pending)."""
        return self.read().start_count

    @property
    def terminal(self) -> bool:
        """Whether the order has ended (Completed, Partial, Canceled, Refunded)."""
        return canonical_status(self.status) in ORDER_TERMINAL_STATUSES


class Refill:
    """One refill of an order; ``status`` is read from the clock."""

    __slots__ = ("_clock", "_forced", "_life", "created", "id", "order", "rejected")

    def __init__(
        self, refill_id: int, order: int, created: float, rejected: bool, clock: SandboxClock, life: Lifecycle
    ):
        self.id = refill_id
        self.order = order
        self.created = created
        self.rejected = rejected
        self._forced: str | None = None
        self._clock = clock
        self._life = life

    def __repr__(self) -> str:
        return f"Refill(id={self.id}, order={self.order}, status={self.status!r})"

    def progress(self, now: float | None = None) -> str:
        """Return the status at sandbox time ``now`` (default: the clock's now)."""
        if self._forced is not None:
            return self._forced
        elapsed = (self._clock.now() if now is None else now) - self.created
        if elapsed < self._life.refill_pending_seconds:
            return PENDING
        if self.rejected:
            return REJECTED
        if elapsed < self._life.refill_pending_seconds + self._life.refill_run_seconds:
            return IN_PROGRESS
        return COMPLETED

    @property
    def status(self) -> str:
        """The refill's status now."""
        return self.progress()

    @property
    def terminal(self) -> bool:
        """Whether the refill has ended."""
        return canonical_status(self.status) in REFILL_TERMINAL_STATUSES


def _every(sequence: int, period: int) -> bool:
    return period > 0 and sequence % period == 0


class PanelState:
    """The panel's orders, refills and balance.

    ``orders`` and ``refills`` are dicts keyed by ID; iterate over a copy (``list(state.orders)``)
    while the server is running. New IDs come from ``order_ids`` and ``refill_ids`` (default: from
    1000 and 1); which orders end Partial and which refills are Rejected depends only on how many
    came before them in this panel, not on their IDs.
    """

    def __init__(
        self,
        clock: SandboxClock,
        lifecycle: Lifecycle,
        balance: float,
        currency: str,
        order_ids: IdSource | None = None,
        refill_ids: IdSource | None = None,
    ):
        self.lock = threading.RLock()
        self.clock = clock
        self.lifecycle = lifecycle
        self.currency = currency
        self.orders: dict[int, Order] = {}
        self.refills: dict[int, Refill] = {}
        self._balance = float(balance)
        self._order_ids = order_ids or CountingIds(FIRST_ORDER_ID)
        self._refill_ids = refill_ids or CountingIds(FIRST_REFILL_ID)
        self._orders_created = 0
        self._refills_created = 0
        # (finishes_at, order ID) of orders that will end Partial: their refunds are credited when due.
        self._partials: list[tuple[float, int]] = []

    @property
    def balance(self) -> float:
        """The balance, including refunds of orders that have ended Partial by now."""
        with self.lock:
            self._settle_partials(self.clock.now())
            return self._balance

    @balance.setter
    def balance(self, value: float) -> None:
        with self.lock:
            self._balance = float(value)

    def place_order(
        self, service: int, link: str | None, quantity: int | None, params: Mapping[str, str], cost: float
    ) -> Order:
        """Charge the balance and create the order; :class:`NotEnoughFunds` when it falls short."""
        with self.lock:
            now = self.clock.now()
            self._settle_partials(now)
            if cost > self._balance:
                raise NotEnoughFunds(f"the order costs {cost}, the balance is {self._balance}")
            self._balance = round(self._balance - cost, 5)
            return self._new_order(service, link, quantity, dict(params), cost, now, paid=True)

    def insert_orders(
        self,
        count: int,
        service: int,
        link: str,
        quantity: int | None,
        cost: float,
        status: str | None = None,
        remains: Remains | None = None,
    ) -> list[int]:
        """Create ``count`` orders without charging the balance; ``{id}`` in ``link`` becomes the order ID."""
        with self.lock:
            now = self.clock.now()
            ids = []
            for order_id in self._order_ids.take(count):
                order = self._new_order(service, None, quantity, {}, cost, now, paid=False, order_id=order_id)
                order.link = link.replace("{id}", str(order.id))
                if status is not None:
                    order._forced = (status, _default_remains(order, status) if remains is None else remains)
                ids.append(order.id)
            return ids

    def _new_order(
        self,
        service: int,
        link: str | None,
        quantity: int | None,
        params: dict[str, str],
        cost: float,
        now: float,
        paid: bool,
        order_id: int | None = None,
    ) -> Order:
        if order_id is None:
            [order_id] = self._order_ids.take()
        self._orders_created += 1
        order = Order(order_id, service, link, quantity, params, cost, now, self.clock, self.lifecycle)
        order.paid = paid
        order.ends_partial = order.units >= 2 and _every(self._orders_created, self.lifecycle.partial_every)
        self.orders[order_id] = order
        if order.ends_partial and paid:
            heapq.heappush(self._partials, (order.finishes_at, order_id))
        return order

    def set_order(self, order_id: int, status: str | None = None, remains: Remains | None = None) -> Order:
        """Freeze an order in a status (any spelling, e.g. ``"cancelled"``), refunding as the panel would."""
        with self.lock:
            order = self.orders[order_id]
            current_status, current_remains = order.progress()
            status = current_status if status is None else status
            if remains is None:
                remains = current_remains if status == current_status else _default_remains(order, status)
            self._finish(order, status, remains)
            return order

    def cancel(self, order: Order) -> None:
        """Cancel an order: what was not delivered yet is refunded."""
        with self.lock:
            self._finish(order, CANCELED, order.progress()[1])

    def _finish(self, order: Order, status: str, remains: Remains) -> None:
        refund = order.refund_for(status, remains)
        if order.paid:
            self._balance = round(self._balance + refund - order.refunded, 5)
        order.refunded = refund
        order._forced = (status, remains)

    def create_refill(self, order: Order) -> Refill:
        """Start a refill of an order."""
        with self.lock:
            [refill_id] = self._refill_ids.take()
            self._refills_created += 1
            rejected = _every(self._refills_created, self.lifecycle.reject_refill_every)
            refill = Refill(refill_id, order.id, self.clock.now(), rejected, self.clock, self.lifecycle)
            self.refills[refill_id] = refill
            return refill

    def set_refill(self, refill_id: int, status: str) -> Refill:
        """Freeze a refill in a status."""
        with self.lock:
            refill = self.refills[refill_id]
            refill._forced = status
            return refill

    def complete_all(self) -> None:
        """End every unfinished order as Completed and every unfinished refill as Completed."""
        with self.lock:
            now = self.clock.now()
            self._settle_partials(now)
            for order in self.orders.values():
                if canonical_status(order.progress(now)[0]) not in ORDER_TERMINAL_STATUSES:
                    self._finish(order, COMPLETED, 0)
            for refill in self.refills.values():
                if canonical_status(refill.progress(now)) not in REFILL_TERMINAL_STATUSES:
                    refill._forced = COMPLETED

    def _settle_partials(self, now: float) -> None:
        heap = self._partials
        while heap and heap[0][0] <= now:
            _, order_id = heapq.heappop(heap)
            order = self.orders.get(order_id)
            if order is not None and order._forced is None:
                self._finish(order, PARTIAL, order.partial_remains)


def _default_remains(order: Order, status: str) -> Remains:
    canonical = canonical_status(status)
    if canonical == COMPLETED:
        return 0
    if canonical == PARTIAL:
        return max(1, round(order.units * order._life.partial_share))
    return order.units
