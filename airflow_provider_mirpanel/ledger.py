"""The exactly-once ledger of paid orders: what each order key became, across task retries and DAG runs.

The Panel API has no idempotency key: a second ``add`` is a second paid order. So before an order
is sent, the ledger writes that its placement *started*; once the panel answers, it writes the
order ID (or the refusal). A later try (or run) can then tell the orders it must not send again
(placed, or maybe placed) from those it may (refused by the panel, or never sent). One small value
per order key.

Where the ledger lives is its *scope*:

- **per task instance** (the default): Airflow's ``task_state_store`` (3.3), which survives the
  task's retries but not a new DAG run;
- **a named scope** (``ledger_scope="black_friday"``): the asset state store of a ledger asset
  (:func:`ledger_asset`), which survives DAG runs; keys are namespaced by the scope's name, so an
  order key placed by any earlier run of that scope is never placed again.

Keys whose outcome is unknown (the reply was lost, or a try died between sending and recording)
are also listed in a small *unresolved* index per scope, so that a user can list and resolve them
(:class:`~airflow_provider_mirpanel.operators.mirpanel.ResolveOrdersOperator`).

Nothing here talks to the panel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.taskstate import MemoryStateStore, StateStore, store_of

#: Prefix of the ledger's keys. Renaming it would make in-flight retries and later runs forget
#: what earlier ones placed.
KEY_PREFIX = "mirpanel.order."
UNRESOLVED_PREFIX = "mirpanel.unresolved"
MAX_SCOPE_LENGTH = 200  # with a 200-character order key, well under the stores' 512-character keys
_MAX_ERROR = 300  # keep stored values small


class LedgerState(str, Enum):
    """What the ledger knows about one order key."""

    SENDING = "sending"  # an add was (about to be) sent; no answer recorded: it may exist
    PLACED = "placed"  # the panel returned this order ID
    UNKNOWN = "unknown"  # the add may have reached the panel but its reply was lost
    REFUSED = "refused"  # the panel refused it, it was certainly never sent, or a user said so

    @property
    def may_exist(self) -> bool:
        """Whether the panel may hold this order, so it must not be sent again without asking."""
        return self is not LedgerState.REFUSED

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

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"state": self.state.value, "digest": self.digest}
        for name in ("order", "cost", "error"):
            if getattr(self, name) is not None:
                value[name] = getattr(self, name)
        return value

    @classmethod
    def from_json(cls, value: Any) -> LedgerEntry | None:
        """The entry of a stored value; None for a value this ledger did not write."""
        if not isinstance(value, Mapping) or value.get("state") not in LedgerState._value2member_map_:
            return None
        return cls(LedgerState(value["state"]), str(value.get("digest", "")), value.get("order"), value.get("cost"),
                   value.get("error"))


def ledger_asset(mirpanel_conn_id: str) -> Any:
    """The asset whose state store keeps the scoped ledgers of one panel connection.

    One asset per connection: the same key on two panels names two different orders.
    """
    from airflow.sdk import Asset

    return Asset(name=f"mirpanel_order_ledger__{mirpanel_conn_id}", uri=f"mirpanel://{mirpanel_conn_id}/order-ledger")


def check_scope(scope: Any) -> str:
    """A ledger scope's name, or :class:`MirPanelInputError` (before anything is sent)."""
    if not isinstance(scope, str) or not scope.strip() or len(scope) > MAX_SCOPE_LENGTH:
        raise MirPanelInputError(f"ledger_scope must be text of 1..{MAX_SCOPE_LENGTH} characters, got {scope!r}; "
                                 "no order was sent")
    return scope


def try_number(context: Mapping[str, Any]) -> int:
    """The task's try number (1 on the first try, and for a bare ``op.execute(context)``)."""
    return int(getattr(context.get("ti"), "try_number", None) or 1)


class PlacementLedger:
    """Per-order placement records in a state store, in one scope (thread-safe).

    :param store: ``context["task_state_store"]``, an asset's state store accessor, or a
        :class:`~airflow_provider_mirpanel.taskstate.MemoryStateStore`.
    :param scope: the scope's name; None for the per-task-instance ledger.
    :param durable: whether ``store`` survives task retries (False for the in-memory stand-in).
    :param blind: a retry with no store at all: what earlier tries placed cannot be accounted for,
        so every order counts as possibly placed.
    """

    def __init__(self, store: StateStore, scope: str | None = None, durable: bool = True, blind: bool = False):
        self.store = store
        self.scope = scope
        self.durable = durable
        self.blind = blind
        self._prefix = KEY_PREFIX if scope is None else f"{KEY_PREFIX}{quote(scope, safe='')}/"
        self._index_key = UNRESOLVED_PREFIX if scope is None else f"{UNRESOLVED_PREFIX}.{quote(scope, safe='')}"
        self._lock = threading.Lock()

    @classmethod
    def from_context(cls, context: Mapping[str, Any], scope: str | None = None, asset: Any = None) -> PlacementLedger:
        """The ledger of a task's context: scoped in ``asset``'s state store, else the task's own.

        Without any store, an in-memory ledger (``durable`` False), ``blind`` on a retry.
        """
        if scope is not None:
            stores = context.get("asset_state_store")
            if stores is None:
                raise MirPanelInputError("ledger_scope needs Airflow's asset state store (Airflow 3.3+; "
                                         "context['asset_state_store']), which this task does not have; "
                                         "no order was sent")
            return cls(stores[asset], scope=check_scope(scope))
        store = store_of(context)
        if store is None:
            return cls(MemoryStateStore(), durable=False, blind=try_number(context) > 1)
        return cls(store)

    @property
    def where(self) -> str:
        """How messages name the ledger: ``ledger scope 'black_friday'`` or ``this task's ledger``."""
        return f"ledger scope {self.scope!r}" if self.scope is not None else "this task's ledger"

    def get(self, key: str) -> LedgerEntry | None:
        """What an earlier try or run recorded for the order with this key, if anything."""
        with self._lock:
            return LedgerEntry.from_json(self.store.get(self._prefix + key))

    def _write(self, key: str, entry: LedgerEntry) -> None:
        with self._lock:
            self.store.set(self._prefix + key, entry.to_json())

    def sending(self, key: str, digest: str) -> None:
        """Record that the order is about to be sent. Call it before the request, never after."""
        self._write(key, LedgerEntry(LedgerState.SENDING, digest))

    def placed(self, key: str, digest: str, order_id: int, cost: float | None) -> None:
        """Record the order ID the panel returned."""
        self._write(key, LedgerEntry(LedgerState.PLACED, digest, order_id, cost))

    def unknown(self, key: str, digest: str, error: str) -> None:
        """Record that the add may have reached the panel but no order ID came back."""
        self._write(key, LedgerEntry(LedgerState.UNKNOWN, digest, error=error[:_MAX_ERROR]))

    def refused(self, key: str, digest: str, error: str) -> None:
        """Record that the order certainly was not placed (panel refusal, never sent)."""
        self._write(key, LedgerEntry(LedgerState.REFUSED, digest, error=error[:_MAX_ERROR]))

    # -- the unresolved index ----------------------------------------------------------------------

    def unresolved(self) -> list[str]:
        """The keys of this scope whose outcome is unknown, as far as the index knows."""
        with self._lock:
            keys = self.store.get(self._index_key)
        return [str(key) for key in keys] if isinstance(keys, list) else []

    def update_unresolved(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Add keys to the unresolved index and remove others (one write, none when nothing changes)."""
        current = self.unresolved()
        keys = [key for key in current if key not in set(remove)]
        keys += [key for key in dict.fromkeys(add) if key not in keys]
        if keys != current:
            with self._lock:
                self.store.set(self._index_key, keys)

    def resolve(self, key: str, order_id: int | None) -> LedgerEntry:
        """Record what a user found on the panel: the key's order ID, or (None) that it was not placed.

        A key resolved as placed is returned as placed by later tries and runs, without a request;
        one resolved as not placed is placed by the next try or run that has it.
        """
        entry = self.get(key)
        if entry is None:
            raise MirPanelInputError(f"key {key!r} has no entry in {self.where}: nothing to resolve")
        if entry.state is LedgerState.PLACED and entry.order != order_id:
            raise MirPanelInputError(f"key {key!r} is already recorded as order {entry.order} in {self.where}; "
                                     "it is not changed")
        if order_id is not None:
            resolved = LedgerEntry(LedgerState.PLACED, entry.digest, order_id, entry.cost)
        else:
            resolved = LedgerEntry(LedgerState.REFUSED, entry.digest, error="resolved by a user: not placed")
        self._write(key, resolved)
        self.update_unresolved(remove=[key])
        return resolved
