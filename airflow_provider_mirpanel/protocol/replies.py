"""Replies to records: every reply shape of every action becomes flat, typed records.

Each record kind has its field tuple (the columns, in display order) and its ``TypedDict`` side
by side. Multi-ID replies come as an object keyed by ID or as a list of objects; both give one
record per requested ID, in request order, with a per-ID error as data in ``error``. Nothing here
does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypedDict, TypeVar, cast

from airflow_provider_mirpanel.exceptions import MirPanelResponseError
from airflow_provider_mirpanel.protocol.actions import Action, canonical_status
from airflow_provider_mirpanel.protocol.decode import error_text
from airflow_provider_mirpanel.protocol.orders import INT_PARAMS
from airflow_provider_mirpanel.protocol.values import reply_id, snippet, to_bool, to_float, to_int, to_text

MISSING_FROM_REPLY = "ID missing from the panel's reply"
R = TypeVar("R")  # a record type


class _Checked(TypedDict, total=False):
    checked_at: str  # when the record was read (UTC, ISO-8601): added by the sensors, triggers and operators


SERVICE_FIELDS = ("service", "name", "type", "category", "rate", "min", "max", "refill", "cancel", "dripfeed")


class ServiceRecord(TypedDict):
    """One catalogue service (other keys the panel sends, e.g. ``desc``, are kept as they come)."""

    service: int
    name: str | None
    type: str | None
    category: str | None
    rate: float | None  # the price per 1000 units
    min: int | None
    max: int | None
    refill: bool | None
    cancel: bool | None
    dripfeed: bool | None


class _OrderParams(TypedDict, total=False):
    """The ``add`` parameters an order was sent with (those of its service type; see ``orders``)."""

    link: str
    quantity: int
    runs: int
    interval: int
    comments: str
    usernames: str
    hashtags: str
    hashtag: str
    username: str
    media: str
    answer_number: int
    groups: str
    min: int
    max: int
    posts: int
    old_posts: int
    delay: int
    expiry: str
    country: str
    device: int
    type_of_traffic: int
    google_keyword: str
    referring_url: str
    keywords: str


class AddOrderRecord(_OrderParams):
    """A placed order: its ID, the service and the parameters sent."""

    order: int
    service: int


ORDER_STATUS_FIELDS = ("order", "status", "charge", "start_count", "remains", "currency", "error")


class OrderStatusRecord(_Checked):
    """The status of one order; ``error`` is the panel's text for an ID it could not report."""

    order: int
    status: str | None
    charge: float | None
    start_count: int | None
    remains: int | None
    currency: str | None
    error: str | None


REFILL_FIELDS = ("order", "refill", "error")


class RefillRecord(TypedDict):
    """A refill request for one order: the refill's ID, or the panel's refusal in ``error``."""

    order: int
    refill: int | None
    error: str | None


REFILL_STATUS_FIELDS = ("refill", "status", "error")


class RefillStatusRecord(_Checked):
    """The status of one refill."""

    refill: int
    status: str | None
    error: str | None


CANCEL_FIELDS = ("order", "cancel", "error")


class CancelRecord(TypedDict):
    """A cancellation of one order: ``cancel`` is True when the panel accepted it."""

    order: int
    cancel: bool
    error: str | None


BALANCE_FIELDS = ("balance", "currency")


class BalanceRecord(_Checked):
    """The account balance."""

    balance: float
    currency: str | None


def _expect(payload: Any, kind: type | tuple[type, ...], action: Action, what: str) -> Any:
    if not isinstance(payload, kind):
        raise MirPanelResponseError(f"expected {what}, got {type(payload).__name__}", action=action.value)
    return payload


def _nested_error(value: Any) -> str | None:
    """Return the text of a ``{"error": ...}`` value (nested per-ID errors), or None."""
    if isinstance(value, dict) and "error" in value:
        return error_text(value["error"])
    return None


def _status_problem(value: Any) -> str | None:
    """Why a status value cannot be used (absent, empty, not text), or None when it can."""
    if isinstance(value, str) and value.strip():
        return None
    if value is None or value == "":
        return "no status in the panel's reply"
    return f"unexpected status {snippet(repr(value))}"


def _by_id(payload: Any, id_key: str, action: Action) -> dict[int, Any]:
    """Index a multi reply by ID, whichever shape it comes in (object keyed by ID, or list of objects)."""
    indexed: dict[int, Any] = {}
    if isinstance(payload, dict):
        for key, value in payload.items():
            number = reply_id(key)
            if number is not None:
                indexed[number] = value
        return indexed
    if isinstance(payload, list):
        for entry in payload:
            if isinstance(entry, dict):
                number = reply_id(entry.get(id_key))
                if number is not None:
                    indexed[number] = entry
        return indexed
    raise MirPanelResponseError(f"expected an object or a list, got {type(payload).__name__}", action=action.value)


def _per_id(payload: Any, ids: list[int], id_key: str, action: Action, record: Callable[[int, Any], R]) -> list[R]:
    """One record per requested ID, in request order, from the reply's entry for it (None if it lacks one)."""
    indexed = _by_id(payload, id_key, action)
    return [record(item, indexed.get(item)) for item in ids]


def _id_result(raw: Any, value_key: str) -> tuple[Any, str | None]:
    """(value, error) of one entry of a refill/cancel reply, in any of the shapes panels use."""
    if raw is None:
        return None, MISSING_FROM_REPLY
    if isinstance(raw, dict):
        error = _nested_error(raw)
        if error is not None:
            return None, error
        value = raw.get(value_key)
        error = _nested_error(value)
        if error is not None:
            return None, error
        return value, None if value is not None else f"no {value_key!r} in the reply"
    return raw, None


# -- services and add ----------------------------------------------------------------------------


def parse_services(payload: Any) -> list[ServiceRecord]:
    """Service records from a ``services`` reply (a list, or an object keyed by service ID)."""
    if isinstance(payload, dict):
        payload = list(payload.values())
    _expect(payload, list, Action.SERVICES, "a list of services")
    return [_service_record(index, raw) for index, raw in enumerate(payload)]


def _service_record(index: int, raw: Any) -> ServiceRecord:
    if not isinstance(raw, dict):
        raise MirPanelResponseError(f"service #{index} is {type(raw).__name__}, not an object", action="services")
    service_id = to_int(raw.get("service"))
    if service_id is None:
        raise MirPanelResponseError(f"service #{index} has no numeric 'service' ID", action="services")
    record = dict(raw)
    record.update(
        service=service_id,
        name=to_text(raw.get("name")),
        type=to_text(raw.get("type")),
        category=to_text(raw.get("category")),
        rate=to_float(raw.get("rate")),
        min=to_int(raw.get("min")),
        max=to_int(raw.get("max")),
        refill=to_bool(raw.get("refill")),
        cancel=to_bool(raw.get("cancel")),
        dripfeed=to_bool(raw.get("dripfeed")),
    )
    return cast(ServiceRecord, record)


def parse_add(payload: Any, form: Mapping[str, str]) -> AddOrderRecord:
    """Return the placed-order record: the order ID, the service and the parameters sent."""
    _expect(payload, dict, Action.ADD, "an object with 'order'")
    order_id = to_int(payload.get("order"))
    if order_id is None or order_id <= 0:
        raise MirPanelResponseError(f"no order ID in {snippet(json.dumps(payload))}", action="add")
    record: dict[str, Any] = {"order": order_id, "service": int(form["service"])}
    for name, value in form.items():
        if name != "service":
            record[name] = int(value) if name in INT_PARAMS else value
    return cast(AddOrderRecord, record)


# -- order statuses ------------------------------------------------------------------------------


def order_status_record(order_id: int, raw: Any) -> OrderStatusRecord:
    """One order-status record from the panel's object for that order (or its error)."""
    error = (
        _nested_error(raw)
        if isinstance(raw, dict)
        else (MISSING_FROM_REPLY if raw is None else f"unexpected value {snippet(repr(raw))}")
    )
    if error is not None or not isinstance(raw, dict):
        return {
            "order": order_id,
            "status": None,
            "charge": None,
            "start_count": None,
            "remains": None,
            "currency": None,
            "error": error,
        }
    status = raw.get("status")
    nested = _nested_error(status) or _status_problem(status)
    return {
        "order": order_id,
        "status": None if nested else canonical_status(status),
        "charge": to_float(raw.get("charge")),
        "start_count": to_int(raw.get("start_count")),
        "remains": to_int(raw.get("remains")),
        "currency": to_text(raw.get("currency")),
        "error": nested,
    }


def parse_order_status(payload: Any, order_id: int) -> OrderStatusRecord:
    """Return the record of a single-order ``status`` reply."""
    return order_status_record(order_id, _with_status(payload, Action.STATUS, "an order status object"))


def parse_orders_status(payload: Any, ids: list[int]) -> list[OrderStatusRecord]:
    """One status record per requested ID, in request order, per-ID errors as data."""
    if isinstance(payload, dict) and len(ids) == 1 and "status" in payload and str(ids[0]) not in payload:
        return [order_status_record(ids[0], payload)]  # a panel answering one ID in the single shape
    return _per_id(payload, ids, "order", Action.STATUS, order_status_record)


# -- refills and cancels -------------------------------------------------------------------------


def refill_record(order_id: int, raw: Any) -> RefillRecord:
    """One refill record; a refill ID that is not a number becomes an error."""
    value, error = _id_result(raw, "refill")
    refill_id = reply_id(value) if error is None else None
    if refill_id is not None and refill_id <= 0:
        refill_id = None  # "refill": 0 is a refusal, not refill number 0
    if error is None and refill_id is None:
        error = f"unexpected refill ID {snippet(repr(value))}"
    return {"order": order_id, "refill": refill_id, "error": error}


def parse_refill(payload: Any, order_id: int) -> RefillRecord:
    """Return the record of a single-order ``refill`` reply."""
    _expect(payload, dict, Action.REFILL, "an object with 'refill'")
    record = refill_record(order_id, payload)
    if record["refill"] is None and "refill" not in payload:
        raise MirPanelResponseError("no 'refill' in the reply", action="refill")
    return record


def parse_refills(payload: Any, ids: list[int]) -> list[RefillRecord]:
    """One refill record per requested order, in request order."""
    return _per_id(payload, ids, "order", Action.REFILL, refill_record)


def refill_status_record(refill_id: int, raw: Any) -> RefillStatusRecord:
    """One refill-status record."""
    value, error = _id_result(raw, "status")
    error = error or _status_problem(value)
    return {"refill": refill_id, "status": canonical_status(value) if error is None else None, "error": error}


def parse_refill_status(payload: Any, refill_id: int) -> RefillStatusRecord:
    """Return the record of a single ``refill_status`` reply."""
    return refill_status_record(refill_id, _with_status(payload, Action.REFILL_STATUS, "an object with 'status'"))


def _with_status(payload: Any, action: Action, expected: str) -> dict[str, Any]:
    """Return a single-ID status reply, checked to be an object with ``status`` (else MirPanelResponseError)."""
    if not isinstance(payload, dict) or "status" not in payload:
        _expect(payload, dict, action, expected)  # not an object: says what came instead
        raise MirPanelResponseError("no 'status' in the reply", action=action.value)
    return payload


def parse_refills_status(payload: Any, ids: list[int]) -> list[RefillStatusRecord]:
    """One refill-status record per requested refill, in request order."""
    return _per_id(payload, ids, "refill", Action.REFILL_STATUS, refill_status_record)


def cancel_record(order_id: int, raw: Any) -> CancelRecord:
    """One cancel record: ``cancel`` is True when the panel accepted the cancellation."""
    value, error = _id_result(raw, "cancel")
    accepted = error is None and (to_bool(value) is True or (reply_id(value) or 0) > 0)
    if error is None and not accepted:
        # 0, "0", false: refused; a bare text is the panel's reason
        readable = isinstance(value, str) and value.strip() and to_bool(value) is None
        error = value.strip() if readable else "cancel refused"
    return {"order": order_id, "cancel": accepted, "error": error}


def parse_cancels(payload: Any, ids: list[int]) -> list[CancelRecord]:
    """One cancel record per requested order, in request order."""
    return _per_id(payload, ids, "order", Action.CANCEL, cancel_record)


def parse_balance(payload: Any) -> BalanceRecord:
    """Return the balance record."""
    _expect(payload, dict, Action.BALANCE, "an object with 'balance'")
    balance = to_float(payload.get("balance"))
    if balance is None:
        raise MirPanelResponseError(f"no numeric 'balance' in {snippet(json.dumps(payload))}", action="balance")
    return {"balance": balance, "currency": to_text(payload.get("currency"))}


#: Per-ID parser of each multi action.
MULTI_PARSERS: dict[Action, Callable[[Any, list[int]], list[Any]]] = {
    Action.STATUS: parse_orders_status,
    Action.REFILL: parse_refills,
    Action.REFILL_STATUS: parse_refills_status,
    Action.CANCEL: parse_cancels,
}
