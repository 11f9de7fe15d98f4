"""The orders of a placement: input rows checked, keyed and priced before anything is sent.

A :class:`~airflow_provider_mirpanel.operators.mirpanel.PlaceOrderOperator` takes rows (dicts such
as a campaign table's); each becomes an :class:`OrderSpec` (its key and the ``add`` form it sends,
or why it cannot be placed) and, in the end, an order record (:func:`order_record`). Nothing here
talks to the panel.
"""

from __future__ import annotations

import ast
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.protocol import (
    INT_PARAMS,
    build_add_form,
    order_cost,
    order_problems,
    order_type,
    to_float,
    to_int,
)
from airflow_provider_mirpanel.records import Record
from airflow_provider_mirpanel.utils.state_stores import digest

MAX_KEY_LENGTH = 200  # state store keys are at most 512 characters, and a scope's name comes first


class OrderState(str, Enum):
    """The ``state`` field of an order record: what became of one input row on this try."""

    PLACED = "placed"  # the panel holds it (placed on this try, or an earlier try or run)
    REFUSED = "refused"  # the panel refused it: certainly not placed
    NOT_SENT = "not_sent"  # certainly not sent (placing stopped, or the panel was unreachable)
    UNKNOWN = "unknown"  # may have been placed: never resent without on_unknown="resend"
    SKIPPED = "skipped"  # outcome unknown, left out by on_unknown="skip"
    INVALID = "invalid"  # refused before sending: bad parameters or not in the catalogue
    CONFLICT = "conflict"  # its key was used earlier (try or run) for an order with other parameters


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
        """A fingerprint of the order's ``add`` form, to notice that a key's parameters changed."""
        return digest(self.form)

    @property
    def label(self) -> str:
        """How messages name the row: ``row 3`` or ``row 3 (key 'spring-17')``."""
        return f"row {self.index}" if self.key == str(self.index) else f"row {self.index} (key {self.key!r})"


def parse_order_rows(orders: Any, name: str = "orders") -> list[Mapping[str, Any]]:
    """Return the list of rows from what a template field rendered to (a list of dicts, or its JSON/repr text)."""
    if isinstance(orders, str):
        try:
            orders = json.loads(orders)
        except (ValueError, RecursionError):
            try:
                orders = ast.literal_eval(orders)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # "{[]: 1}": unhashable key
                raise MirPanelInputError(
                    f"{name} must be a list of dicts, got text that is neither JSON nor a Python literal"
                ) from None
    if isinstance(orders, Mapping):
        orders = [orders]
    if not isinstance(orders, (list, tuple)) or not all(isinstance(row, Mapping) for row in orders):
        raise MirPanelInputError(f"{name} must be a list of dicts, got {type(orders).__name__}")
    return list(orders)


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA/NaT: an empty cell of a table (pandas is not imported for this)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> Any:
    """Return a numpy scalar (from a DataFrame) as the Python value it holds."""
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


def keyless_rows(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Return the positions of the rows without a ``key`` of their own (their key would be their position)."""
    return [index for index, row in enumerate(rows) if _missing(_plain(row.get("key")))]


def order_specs(rows: Sequence[Mapping[str, Any]]) -> list[OrderSpec]:
    """Every row's spec; rows sharing a key are all invalid (a key must name one order)."""
    specs = [order_spec(index, row) for index, row in enumerate(rows)]
    counts = Counter(spec.key for spec in specs)
    for spec in specs:
        if counts[spec.key] > 1 and spec.error is None:
            spec.error = f"key {spec.key!r} is used by {counts[spec.key]} orders; keys must be unique"
    return specs


def estimated_cost(service: Mapping[str, Any], form: Mapping[str, str]) -> float | None:
    """Return what an order will cost by the catalogue's rate (per 1000 units); None when it cannot be told.

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
    """Return the parameters of an ``add`` form as the hook's placed-order record types them."""
    return {name: int(value) if name in INT_PARAMS else value for name, value in form.items() if name != "service"}


def order_record(
    spec: OrderSpec, state: OrderState, order_id: int | None = None, error: str | None = None, cost: float | None = None
) -> Record:
    """Return the XCom record of one order: key, state, order, service, its parameters, cost, error."""
    record: dict[str, Any] = {"key": spec.key, "state": state.value, "order": order_id, "service": spec.service}
    record.update(form_values(spec.form) if spec.form is not None else {})
    record.update(cost=cost if cost is not None else spec.cost, error=error)
    return record
