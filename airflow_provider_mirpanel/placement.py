"""The exactly-once ledger of paid orders: what each order of a task became, across task retries.

The Panel API has no idempotency key: a second ``add`` is a second paid order. So before an order
is sent, the ledger writes that its placement *started*; once the panel answers, it writes the
order ID (or the refusal). The ledger lives in Airflow's ``task_state_store`` (Airflow 3.3), which
survives task retries, so a retry can tell the orders it must not send again (placed, or maybe
placed) from those it may (refused by the panel, or never sent). One small value per order.

Nothing here talks to the panel.
"""

from __future__ import annotations

import ast
import json
import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelError, MirPanelInputError
from airflow_provider_mirpanel.protocol import (
    INT_PARAMS,
    build_add_form,
    order_cost,
    order_problems,
    order_type,
    to_float,
    to_int,
)
from airflow_provider_mirpanel.taskstate import MemoryStateStore, StateStore, digest, store_of

#: Prefix of the ledger's keys in ``task_state_store``. Renaming it would make in-flight retries
#: forget what earlier tries placed.
KEY_PREFIX = "mirpanel.order."
MAX_KEY_LENGTH = 200  # task_state_store keys are at most 512 characters
_MAX_ERROR = 300  # keep stored values small


class OrdersNotPlacedError(MirPanelError):
    """Some orders of a :class:`PlaceOrderOperator` were not placed; ``records`` says what each became."""

    def __init__(self, message: str, records: list[dict[str, Any]]):
        self.records = records
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.records))


class Entry(str, Enum):
    """What the ledger knows about one order."""

    SENDING = "sending"  # an add was (about to be) sent; no answer recorded: it may exist
    PLACED = "placed"  # the panel returned this order ID
    UNKNOWN = "unknown"  # the add may have reached the panel but its reply was lost
    REFUSED = "refused"  # the panel refused it, or it was certainly never sent: not placed

    @property
    def may_exist(self) -> bool:
        """Whether the panel may hold this order, so it must not be sent again without asking."""
        return self is not Entry.REFUSED


@dataclass(frozen=True)
class LedgerEntry:
    """One order's ledger value."""

    state: Entry
    digest: str
    order: int | None = None
    cost: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"state": self.state.value, "digest": self.digest}
        for name in ("order", "cost", "error"):
            if getattr(self, name) is not None:
                value[name] = getattr(self, name)
        return value

    @classmethod
    def from_json(cls, value: Any) -> LedgerEntry | None:
        """The entry of a stored value; None for a value this ledger did not write."""
        if not isinstance(value, Mapping) or value.get("state") not in Entry._value2member_map_:
            return None
        return cls(Entry(value["state"]), str(value.get("digest", "")), value.get("order"), value.get("cost"),
                   value.get("error"))


class PlacementLedger:
    """Per-order placement records in a task's state store (thread-safe).

    :param store: ``context["task_state_store"]``, or a :class:`MemoryStateStore` when there is none.
    :param durable: whether ``store`` survives task retries (False for the in-memory stand-in).
    """

    def __init__(self, store: StateStore, durable: bool = True):
        self.store = store
        self.durable = durable
        self._lock = threading.Lock()

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> PlacementLedger:
        """The ledger of a task's context; an in-memory one (``durable`` False) when it has no store."""
        store = store_of(context)
        if store is None:
            return cls(MemoryStateStore(), durable=False)
        return cls(store)

    def get(self, key: str) -> LedgerEntry | None:
        """What an earlier try recorded for the order with this key, if anything."""
        with self._lock:
            return LedgerEntry.from_json(self.store.get(KEY_PREFIX + key))

    def _write(self, key: str, entry: LedgerEntry) -> None:
        with self._lock:
            self.store.set(KEY_PREFIX + key, entry.to_json())

    def sending(self, key: str, digest: str) -> None:
        """Record that the order is about to be sent. Call it before the request, never after."""
        self._write(key, LedgerEntry(Entry.SENDING, digest))

    def placed(self, key: str, digest: str, order_id: int, cost: float | None) -> None:
        """Record the order ID the panel returned."""
        self._write(key, LedgerEntry(Entry.PLACED, digest, order_id, cost))

    def unknown(self, key: str, digest: str, error: str) -> None:
        """Record that the add may have reached the panel but no order ID came back."""
        self._write(key, LedgerEntry(Entry.UNKNOWN, digest, error=error[:_MAX_ERROR]))

    def refused(self, key: str, digest: str, error: str) -> None:
        """Record that the order certainly was not placed (panel refusal, never sent)."""
        self._write(key, LedgerEntry(Entry.REFUSED, digest, error=error[:_MAX_ERROR]))


# ---------------------------------------------------------------------------------------------
# The orders of a task: input rows checked, keyed and priced before anything is sent
# ---------------------------------------------------------------------------------------------


class State(str, Enum):
    """The ``state`` field of a placed-order record."""

    PLACED = "placed"  # the panel holds it (placed on this try or an earlier one)
    REFUSED = "refused"  # the panel refused it: certainly not placed
    NOT_SENT = "not_sent"  # certainly not sent (placing stopped, or the panel was unreachable)
    UNKNOWN = "unknown"  # may have been placed: never resent without on_unknown="resend"
    SKIPPED = "skipped"  # outcome unknown on an earlier try, skipped by on_unknown="skip"
    INVALID = "invalid"  # refused before sending: bad parameters or not in the catalogue
    CONFLICT = "conflict"  # its key was used on an earlier try for an order with other parameters


@dataclass
class OrderSpec:
    """One input row: its key, the ``add`` form it becomes, or why it cannot be placed."""

    index: int
    key: str
    service: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    form: dict[str, str] | None = None
    error: str | None = None
    cost: float | None = None

    @property
    def digest(self) -> str:
        return digest(self.form)

    @property
    def label(self) -> str:
        """How messages name the row: ``row 3`` or ``row 3 (key 'spring-17')``."""
        return f"row {self.index}" if self.key == str(self.index) else f"row {self.index} (key {self.key!r})"


def parse_order_rows(orders: Any) -> list[Mapping[str, Any]]:
    """The list of order rows from what ``orders=`` rendered to (a list of dicts, or its JSON/repr text)."""
    if isinstance(orders, str):
        try:
            orders = json.loads(orders)
        except (ValueError, RecursionError):
            try:
                orders = ast.literal_eval(orders)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # "{[]: 1}": unhashable key
                raise MirPanelInputError("orders must be a list of dicts, got text that is neither JSON nor a "
                                         "Python literal") from None
    if isinstance(orders, Mapping):
        orders = [orders]
    if not isinstance(orders, (list, tuple)) or not all(isinstance(row, Mapping) for row in orders):
        raise MirPanelInputError(f"orders must be a list of dicts, got {type(orders).__name__}")
    return list(orders)


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA/NaT: an empty cell of a table (pandas is not imported for this)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> Any:
    """A numpy scalar (from a DataFrame) as the Python value it holds."""
    return value.item() if type(value).__module__ == "numpy" and hasattr(value, "item") else value


def order_spec(index: int, row: Mapping[str, Any]) -> OrderSpec:
    """Check one row's own parameters (no catalogue yet): its key, service ID and ``add`` form."""
    plain = {name: _plain(value) for name, value in row.items()}
    values = {name: value for name, value in plain.items() if not _missing(value)}
    key = str(values.pop("key", index))
    spec = OrderSpec(index, key)
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        spec.error = f"key must be 1..{MAX_KEY_LENGTH} characters"
        return spec
    spec.service = to_int(values.get("service"))
    if "service" not in values:
        spec.error = "no 'service' given"
        return spec
    spec.params = {name: value for name, value in values.items() if name != "service"}
    try:
        spec.form = build_add_form(values["service"], spec.params)
    except MirPanelInputError as error:
        spec.error = str(error)
    return spec


def order_specs(rows: list[Mapping[str, Any]]) -> list[OrderSpec]:
    """Every row's spec; rows sharing a key are all invalid (a key must name one order)."""
    specs = [order_spec(index, row) for index, row in enumerate(rows)]
    counts = Counter(spec.key for spec in specs)
    for spec in specs:
        if counts[spec.key] > 1 and spec.error is None:
            spec.error = f"key {spec.key!r} is used by {counts[spec.key]} orders; keys must be unique"
    return specs


def estimated_cost(service: Mapping[str, Any], form: Mapping[str, str]) -> float | None:
    """What an order will cost by the catalogue's rate (per 1000 units); None when it cannot be told.

    Units are the quantity, else the lines of ``comments``/``usernames`` (custom lists); packages
    cost their rate. Subscriptions (charged per post) and services without a rate give None.
    """
    rate = to_float(service.get("rate"))
    if rate is None:
        return None
    kind = order_type(service.get("type"))
    if "quantity" in form:
        units: int | None = int(form["quantity"])
    elif kind is not None and kind.name.endswith("Package"):
        units = None
    elif "comments" in form or "usernames" in form:
        units = len((form.get("comments") or form["usernames"]).splitlines())
    else:
        return None
    return round(order_cost(rate, units), 6)


def check_against_catalogue(specs: Iterable[OrderSpec], services: Mapping[int, Mapping[str, Any]]) -> None:
    """Mark specs whose service is not in the catalogue or whose parameters it refuses; price the rest."""
    for spec in specs:
        if spec.error is not None or spec.form is None:
            continue
        service = services.get(int(spec.form["service"]))
        if service is None:
            spec.error = f"service {spec.form['service']} is not in the panel's catalogue (unknown or disabled)"
            continue
        problems = order_problems(service, spec.form)
        if problems:
            spec.error = "; ".join(problems)
        spec.cost = estimated_cost(service, spec.form)


def form_values(form: Mapping[str, str]) -> dict[str, Any]:
    """The parameters of an ``add`` form as the hook's placed-order record types them."""
    return {name: int(value) if name in INT_PARAMS else value for name, value in form.items() if name != "service"}


def placed_record(spec: OrderSpec, state: State, order_id: int | None = None, error: str | None = None,
                  cost: float | None = None) -> dict[str, Any]:
    """The XCom record of one order: key, state, order, service, its parameters, cost, error."""
    record: dict[str, Any] = {"key": spec.key, "state": state.value, "order": order_id, "service": spec.service}
    record.update(form_values(spec.form) if spec.form is not None else {})
    record.update(cost=cost if cost is not None else spec.cost, error=error)
    return record
