"""The panel's API actions: a request form in, the panel's JSON reply out.

The order rules come from :mod:`airflow_provider_mirpanel.protocol` (order types, parameter checks,
costs); this module only turns their verdicts into the texts real panels answer with. Errors are
HTTP 200 with ``{"error": "..."}``, as most panels send them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.protocol import (
    MAX_IDS_PER_REQUEST,
    ORDER_PARAMS,
    OrderType,
    build_add_form,
    canonical_status,
    order_cost,
    order_problems,
    order_type,
    to_bool,
    to_float,
    to_int,
)
from airflow_provider_mirpanel.sandbox.catalogue import Catalogue
from airflow_provider_mirpanel.sandbox.state import COMPLETED, PARTIAL, NotEnoughFunds, Order, PanelState

INVALID_KEY = "Invalid API key"
INCORRECT_REQUEST = "Incorrect request"
INCORRECT_SERVICE = "Incorrect service ID"
INCORRECT_ORDER = "Incorrect order ID"
BAD_LINK = "Bad link"
NOT_ENOUGH_FUNDS = "Not enough funds on balance"
NOT_REFILLABLE = "Order not eligible for refill."
REFILL_NOT_FOUND = "Refill not found"
NOT_CANCELABLE = "Cancel is not available for this order"

_ID_FIELDS = ("order", "orders", "refill", "refills")


@dataclass
class Reply:
    """An HTTP reply: status, body and headers."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    created: list[int] = field(default_factory=list)  # order/refill IDs the request created

    @classmethod
    def of(cls, payload: Any, status: int = 200, created: list[int] | None = None) -> Reply:
        """Make a reply of ``payload`` (JSON) with an HTTP ``status``, naming the orders or refills it ``created``."""
        return cls(json.dumps(payload, ensure_ascii=False).encode(), status, created=created or [])


def error(text: str, status: int = 200) -> Reply:
    """Return the panel's ``{"error": text}`` reply."""
    return Reply.of({"error": text}, status)


def _digits_as_int(token: str) -> int | None:
    """Return the token as an int when it is all digits (after trimming), else None."""
    token = token.strip()
    return int(token) if token.isdigit() else None


def split_ids(text: str) -> list[str]:
    """Return the distinct non-empty tokens of a comma-separated ID list, in order."""
    return list(dict.fromkeys(token.strip() for token in text.split(",") if token.strip()))


def requested_ids(form: Mapping[str, str]) -> list[int]:
    """Return the numeric IDs a request names in ``order``, ``orders``, ``refill`` or ``refills``."""
    ids: list[int] = []
    for name in _ID_FIELDS:
        for token in split_ids(form.get(name, "")):
            number = _digits_as_int(token)
            if number is not None:
                ids.append(number)
    return ids


def _multi_id(token: str) -> int | str:
    """How a multi reply names an ID: the number when it is one, else the text as sent."""
    number = _digits_as_int(token)
    return number if number is not None else token


def _entries(ids: str, id_name: str, value_name: str, answer: Callable[[str], Any]) -> list[dict[str, Any]]:
    """Return a multi-ID reply's entries, ``{id_name: the ID as sent, value_name: answer(token)}``, in request order."""
    return [{id_name: _multi_id(token), value_name: answer(token)} for token in split_ids(ids)]


def _or_error(outcome: int | str) -> int | dict[str, str]:
    """Return an outcome as a multi-ID reply holds it: the new ID, or ``{"error": reason}``."""
    return outcome if isinstance(outcome, int) else {"error": outcome}


class PanelApi:
    """Answers API requests from the panel's state, one form at a time."""

    def __init__(self, state: PanelState, catalogue: Catalogue, api_key: str):
        self.state = state
        self.catalogue = catalogue
        self.api_key = api_key
        self._actions: dict[str, Callable[[Mapping[str, str]], Reply]] = {
            "services": self._services,
            "add": self._add,
            "status": self._status,
            "refill": self._refill,
            "refill_status": self._refill_status,
            "cancel": self._cancel,
            "balance": self._balance,
        }

    def handle(self, form: Mapping[str, str]) -> Reply:
        """Return the reply to one request form (``key``, ``action`` and the action's parameters)."""
        if not secrets.compare_digest(form.get("key", "").encode(), self.api_key.encode()):
            return error(INVALID_KEY)
        action = self._actions.get(form.get("action", "").strip())
        if action is None:
            return error(INCORRECT_REQUEST)
        for name in ("orders", "refills"):
            if len(split_ids(form.get(name, ""))) > MAX_IDS_PER_REQUEST:
                return error(INCORRECT_REQUEST)
        with self.state.lock:
            return action(form)

    # -- services, balance --------------------------------------------------------------------

    def _services(self, form: Mapping[str, str]) -> Reply:
        return Reply(self.catalogue.reply)

    def _balance(self, form: Mapping[str, str]) -> Reply:
        return Reply.of({"balance": f"{self.state.balance:.5f}", "currency": self.state.currency})

    # -- add ----------------------------------------------------------------------------------

    def _add(self, form: Mapping[str, str]) -> Reply:
        service_id = _digits_as_int(form.get("service", "")) or 0
        service = self.catalogue.by_id.get(service_id)
        if service is None:
            return error(INCORRECT_SERVICE)
        params = {name: value for name, value in form.items() if name in ORDER_PARAMS and value.strip()}
        kind = order_type(service.get("type"))
        refusal = _first_refusal(service, kind, params)
        if refusal is not None:
            return error(refusal)
        quantity = _units(kind, params)
        cost = round(order_cost(to_float(service.get("rate")), quantity), 5)
        try:
            order = self.state.place_order(service_id, params.get("link"), quantity, params, cost)
        except NotEnoughFunds:
            return error(NOT_ENOUGH_FUNDS)
        return Reply.of({"order": order.id}, created=[order.id])

    # -- status -------------------------------------------------------------------------------

    def _status_fields(self, order: Order, now: float) -> dict[str, str]:
        status, remains, charge, start_count = order.read(now)
        return {
            "charge": f"{charge:.5f}",
            "start_count": str(start_count),
            "status": status,
            "remains": str(remains),
            "currency": self.state.currency,
        }

    def _status(self, form: Mapping[str, str]) -> Reply:
        now = self.state.clock.now()
        if "orders" in form:
            reply: dict[str, Any] = {}
            for token in split_ids(form["orders"]):
                order = self._order(token)
                key = str(_multi_id(token))
                reply[key] = self._status_fields(order, now) if order else {"error": INCORRECT_ORDER}
            return Reply.of(reply)
        order = self._order(form.get("order", ""))
        return Reply.of(self._status_fields(order, now)) if order else error(INCORRECT_ORDER)

    def _order(self, token: str) -> Order | None:
        number = _digits_as_int(token)
        return self.state.orders.get(number) if number is not None else None

    # -- refill -------------------------------------------------------------------------------

    def _refill_one(self, token: str) -> int | str:
        """Return the new refill's ID, or the panel's error text."""
        order = self._order(token)
        if order is None:
            return INCORRECT_ORDER
        service = self.catalogue.by_id.get(order.service, {})
        if not to_bool(service.get("refill")) or canonical_status(order.status) not in (COMPLETED, PARTIAL):
            return NOT_REFILLABLE
        return self.state.create_refill(order).id

    def _refill(self, form: Mapping[str, str]) -> Reply:
        if "orders" in form:
            entries = _entries(form["orders"], "order", "refill", lambda token: _or_error(self._refill_one(token)))
            return Reply.of(entries, created=[e["refill"] for e in entries if isinstance(e["refill"], int)])
        if "order" not in form:
            return error(INCORRECT_REQUEST)
        outcome = self._refill_one(form["order"])
        if isinstance(outcome, str):
            return error(outcome)
        return Reply.of({"refill": str(outcome)}, created=[outcome])

    def _refill_status(self, form: Mapping[str, str]) -> Reply:
        if "refills" in form:
            return Reply.of(_entries(form["refills"], "refill", "status", self._refill_status_entry))
        if "refill" not in form:
            return error(INCORRECT_REQUEST)
        status = self._refill_state(form["refill"])
        return Reply.of({"status": status}) if status is not None else error(REFILL_NOT_FOUND)

    def _refill_status_entry(self, token: str) -> str | dict[str, str]:
        status = self._refill_state(token)
        return status if status is not None else {"error": REFILL_NOT_FOUND}

    def _refill_state(self, token: str) -> str | None:
        number = _digits_as_int(token)
        refill = self.state.refills.get(number) if number is not None else None
        return refill.status if refill is not None else None

    # -- cancel -------------------------------------------------------------------------------

    def _cancel_one(self, token: str) -> int | str:
        order = self._order(token)
        if order is None:
            return INCORRECT_ORDER
        service = self.catalogue.by_id.get(order.service, {})
        if not to_bool(service.get("cancel")) or order.terminal:
            return NOT_CANCELABLE
        self.state.cancel(order)
        return 1

    def _cancel(self, form: Mapping[str, str]) -> Reply:
        if "orders" not in form:
            return error(INCORRECT_REQUEST)
        return Reply.of(_entries(form["orders"], "order", "cancel", lambda token: _or_error(self._cancel_one(token))))


def _first_refusal(service: Mapping[str, Any], kind: OrderType | None, params: Mapping[str, str]) -> str | None:
    """Return the panel's error text for an order it refuses, or None when it accepts it.

    Link and quantity range get the texts panels use; every other problem found by
    :func:`protocol.order_problems` is an "Incorrect request" with the detail appended.
    """
    if kind is not None and "link" in kind.required and not _plausible_link(params.get("link")):
        return BAD_LINK
    quantity = _digits_as_int(params.get("quantity", "x"))
    if kind is not None and "quantity" in kind.required and quantity is not None:
        low, high = to_int(service.get("min")), to_int(service.get("max"))
        if low is not None and quantity < low:
            return f"Quantity less than minimal {low}"
        if high is not None and quantity > high:
            return f"Quantity more than maximum {high}"
    try:
        problems = order_problems(service, build_add_form(service.get("service"), params))
    except MirPanelInputError as exc:
        problems = [str(exc)]
    return f"{INCORRECT_REQUEST}: {'; '.join(problems)}" if problems else None


def _plausible_link(link: str | None) -> bool:
    return link is not None and link != "" and not any(ch.isspace() for ch in link)


def _units(kind: OrderType | None, params: Mapping[str, str]) -> int | None:
    """Return the order's quantity: as given, else one unit per comment/username line; None for packages."""
    if "quantity" in params:
        return int(params["quantity"])
    if kind is not None and kind.name.endswith("Package"):
        return None
    for name in ("comments", "usernames"):
        if name in params:
            return len([line for line in params[name].splitlines() if line.strip()])
    return None
