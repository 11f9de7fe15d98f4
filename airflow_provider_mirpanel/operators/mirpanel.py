"""Operators for MirPanel and every panel serving the Perfect Panel API v2.

Every operator returns *records* as its XCom value: flat dicts (lists of them) with the hook's
fields, ready for :func:`airflow_provider_mirpanel.records.to_dataframe`. Inputs are template
fields, so IDs and orders can come from Jinja or from an upstream task's ``XComArg``. Each
operator logs one line that sums up what it did.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_provider_mirpanel.exceptions import (
    MirPanelAmbiguousOrderError,
    MirPanelAPIError,
    MirPanelAuthError,
    MirPanelError,
    MirPanelInputError,
    MirPanelInsufficientFundsError,
    MirPanelTransientError,
)
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.placement import (
    Entry,
    OrdersNotPlacedError,
    OrderSpec,
    PlacementLedger,
    State,
    check_against_catalogue,
    order_specs,
    parse_order_rows,
    placed_record,
)
from airflow_provider_mirpanel.protocol import normalize_ids, to_float, to_text
from airflow_provider_mirpanel.records import CHECKED_AT, utc_now

Record = dict[str, Any]

ON_UNKNOWN = ("fail", "skip", "resend")
ON_INVALID = ("fail", "skip")
ON_LOW = ("fail", "skip", "warn")


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _listing(items: Iterable[str], limit: int = 10) -> str:
    shown = list(items)
    text = ", ".join(shown[:limit])
    return text + (f" … (+{len(shown) - limit} more)" if len(shown) > limit else "")


def _errors_by_id(records: Iterable[Mapping[str, Any]], id_field: str) -> str:
    """``12, 13 (Incorrect order ID); 40 (Refill not found)``: failed IDs grouped by error text."""
    grouped: dict[str, list[str]] = {}
    for record in records:
        if record.get("error"):
            grouped.setdefault(str(record["error"]), []).append(str(record[id_field]))
    return "; ".join(f"{_listing(ids)} ({error})" for error, ids in grouped.items())


class MirPanelBaseOperator(BaseOperator):
    """Base of this provider's operators: the connection and the hook.

    :param mirpanel_conn_id: the Airflow connection of the panel (host: API URL, password: API key).
    """

    def __init__(self, *, mirpanel_conn_id: str = MirPanelHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mirpanel_conn_id = mirpanel_conn_id

    @cached_property
    def hook(self) -> MirPanelHook:
        """The hook of ``mirpanel_conn_id`` (one per operator instance, its HTTP session reused)."""
        return MirPanelHook(mirpanel_conn_id=self.mirpanel_conn_id)


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


def _flat(record: Mapping[str, Any]) -> Record:
    """A record whose nested values (some panels nest extra fields) are JSON text."""
    return {name: to_text(value) if isinstance(value, (dict, list)) else value for name, value in record.items()}


class ServicesOperator(MirPanelBaseOperator):
    """The panel's catalogue as records, optionally filtered.

    XCom: one record per matching service (``service, name, type, category, rate, min, max, refill,
    cancel, dripfeed``, and whatever other fields the panel sends). ``rate`` is the price per 1000.

    :param service_ids: keep only these service IDs (a list, or text such as ``"1,2,3"``).
    :param category: keep services whose category contains this text (case-insensitive).
    :param name: keep services whose name contains this text (case-insensitive).
    :param service_type: keep services of this type, e.g. ``"Default"`` (case-insensitive).
    """

    template_fields: Sequence[str] = ("service_ids", "category", "name", "service_type")

    def __init__(
        self,
        *,
        service_ids: Any = None,
        category: str | None = None,
        name: str | None = None,
        service_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service_ids = service_ids
        self.category = category
        self.name = name
        self.service_type = service_type

    def execute(self, context: Context) -> list[Record]:
        keep = self._filter()  # invalid IDs are refused before the request
        services = self.hook.get_services()
        matching = [_flat(service) for service in services if keep(service)]
        self.log.info("%d of %d services match%s", len(matching), len(services), self._filters_text())
        return matching

    def _filter(self) -> Callable[[Mapping[str, Any]], bool]:
        wanted = set(normalize_ids(self.service_ids, "service")) if self.service_ids not in (None, "") else None
        texts = [(field, text.casefold()) for field, text in (("category", self.category), ("name", self.name))
                 if text]
        service_type = (self.service_type or "").casefold()

        def keep(service: Mapping[str, Any]) -> bool:
            if wanted is not None and service.get("service") not in wanted:
                return False
            if any(text not in str(service.get(field) or "").casefold() for field, text in texts):
                return False
            return not service_type or str(service.get("type") or "").casefold() == service_type

        return keep

    def _filters_text(self) -> str:
        filters = [f"{name} {value!r}" for name, value in (("IDs", self.service_ids), ("category", self.category),
                   ("name", self.name), ("type", self.service_type)) if value not in (None, "")]
        return f" ({', '.join(filters)})" if filters else ""


# ---------------------------------------------------------------------------------------------
# Placing orders, exactly once across retries
# ---------------------------------------------------------------------------------------------


class PlaceOrderOperator(MirPanelBaseOperator):
    """Place one order or many, each exactly once across task retries.

    One order: ``service=``, ``link=``, ``quantity=`` and the type's other parameters in
    ``order_parameters`` (e.g. ``{"runs": 5, "interval": 30}`` for drip-feed, ``{"comments":
    [...]}`` for custom comments). Many: ``orders=``, a list of dicts with ``service`` and the
    type's parameters (e.g. the records of a campaign table), each optionally with a ``key``.

    Before anything is spent, every order is checked against the catalogue: the service is listed
    (so it exists and is enabled), its type's parameters are given and valid, the quantity is
    within ``min``..``max``; with ``check_balance=True``, the estimated cost (``rate × quantity /
    1000``) must be covered by the balance. Invalid orders are named with their row and reason.
    Orders are then placed concurrently (at most ``max_concurrency`` at once). A panel refusal is
    recorded in that order's record; "not enough funds" (or a bad key) stops placing the rest.
    The task fails at the end if any order was not placed, naming them (an
    :class:`~airflow_provider_mirpanel.placement.OrdersNotPlacedError` whose ``records`` are the
    records this try would have returned; an ``on_failure_callback`` finds it in
    ``context["exception"]``).

    **Exactly once.** Each order has a key: its ``key`` field, else its position in the list
    (``"0"``, ``"1"``, …). The task's ``task_state_store`` records that an order's placement
    started *before* it is sent, and its order ID once placed. On a retry, placed orders are
    returned as they were without a request; orders refused by the panel, or never sent, are
    placed again; orders whose outcome is unknown (the reply was lost, or the try died between
    sending and recording) are never resent by default — see ``on_unknown``.

    XCom: one record per order, in input order: ``key, state, order, service`` + the parameters
    sent + ``cost`` (estimated from the catalogue's rate) and ``error``. ``state`` is ``placed``,
    ``refused``, ``not_sent``, ``unknown``, ``skipped``, ``invalid`` or ``conflict``.

    :param service: the service ID of a single order.
    :param link: its link.
    :param quantity: its quantity.
    :param order_parameters: its other parameters (by the service's type).
    :param orders: many orders, instead of ``service``/``link``/``quantity``/``order_parameters``.
    :param check_balance: check that the balance covers the estimated cost before placing anything.
    :param on_unknown: what to do about an order whose outcome is unknown from an earlier try:
        ``"fail"`` (default: report it as ``unknown`` and fail the task — check the panel's order
        list), ``"skip"`` (report it as ``skipped``; also keeps an unknown outcome on this try from
        failing the task) or ``"resend"`` (place it again: may duplicate a paid order).
    :param on_invalid: ``"fail"`` (default) refuses all orders when any is invalid, before sending
        anything; ``"skip"`` places the valid ones and reports the others as ``invalid``.
    :param max_concurrency: orders in flight at once (default: the connection's ``concurrency``).
    """

    template_fields: Sequence[str] = ("service", "link", "quantity", "order_parameters", "orders")
    template_fields_renderers = {"order_parameters": "json", "orders": "json"}
    ui_color = "#f7d08a"

    def __init__(
        self,
        *,
        service: Any = None,
        link: Any = None,
        quantity: Any = None,
        order_parameters: Mapping[str, Any] | None = None,
        orders: Any = None,
        check_balance: bool = False,
        on_unknown: str = "fail",
        on_invalid: str = "fail",
        max_concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (orders is None) == (service is None):
            raise ValueError("give either service= (one order) or orders= (many orders), not both or neither")
        if orders is not None and (link, quantity, order_parameters) != (None, None, None):
            raise ValueError("link, quantity and order_parameters belong to a single order: put them in orders")
        self.service = service
        self.link = link
        self.quantity = quantity
        self.order_parameters = order_parameters
        self.orders = orders
        self.check_balance = check_balance
        self.on_unknown = _choice("on_unknown", on_unknown, ON_UNKNOWN)
        self.on_invalid = _choice("on_invalid", on_invalid, ON_INVALID)
        self.max_concurrency = max_concurrency

    def _rows(self) -> list[Mapping[str, Any]]:
        if self.orders is not None:
            return parse_order_rows(self.orders)
        extra = self.order_parameters or {}
        if not isinstance(extra, Mapping):
            raise MirPanelInputError(f"order_parameters must be a dict, got {type(extra).__name__}")
        row = dict(extra)
        row.update({name: value for name, value in (("service", self.service), ("link", self.link),
                                                     ("quantity", self.quantity)) if value is not None})
        return [row]

    def execute(self, context: Context) -> list[Record]:
        specs = order_specs(self._rows())
        ledger = PlacementLedger.from_context(context)
        if not ledger.durable:
            self.log.warning("No task_state_store in the context: orders placed on this try cannot be guarded "
                             "against a second placement on a retry")
        run = _PlacementRun(self, specs, ledger)
        records = run.execute()
        self.log.info(run.summary())
        failure = run.failure()
        if failure:
            raise OrdersNotPlacedError(failure, records)
        return records


class _PlacementRun:
    """One try of a :class:`PlaceOrderOperator`: triage against the ledger, check, place, report."""

    def __init__(self, operator: PlaceOrderOperator, specs: list[OrderSpec], ledger: PlacementLedger):
        self.op = operator
        self.specs = specs
        self.ledger = ledger
        self.records: dict[int, Record] = {}
        self.earlier: set[int] = set()  # indexes of the orders placed on an earlier try
        self.currency: str | None = None
        self.stop_reason: str | None = None
        self.balance_note = ""
        self._stop = threading.Lock()

    @property
    def log(self) -> Any:
        return self.op.log

    def execute(self) -> list[Record]:
        to_send = self._triage()
        if to_send:
            services = {service["service"]: service for service in self.op.hook.get_services()}
            check_against_catalogue(to_send, services)
        self._refuse_invalid()
        to_send = [spec for spec in to_send if spec.error is None]
        if to_send and self.op.check_balance:
            self._check_balance(to_send)
        if to_send:
            self._place(to_send)
        return [self.records[spec.index] for spec in self.specs]

    # -- before sending ----------------------------------------------------------------------------

    def _triage(self) -> list[OrderSpec]:
        """Settle the orders an earlier try dealt with; return those to send on this try."""
        to_send = []
        for spec in self.specs:
            if spec.error is not None:
                continue
            entry = self.ledger.get(spec.key)
            if entry is None or entry.state is Entry.REFUSED:
                to_send.append(spec)
            elif entry.digest != spec.digest:
                held = f"order {entry.order}" if entry.order else entry.state.value
                self.records[spec.index] = placed_record(
                    spec, State.CONFLICT, entry.order,
                    f"key {spec.key!r} was used on an earlier try ({held}) for an order with other parameters; "
                    "not placed")
            elif entry.state is Entry.PLACED:
                self.earlier.add(spec.index)
                self.records[spec.index] = placed_record(spec, State.PLACED, entry.order, cost=entry.cost)
            elif self.op.on_unknown == "resend":
                self.log.warning("Resending %s (outcome unknown on an earlier try) as on_unknown='resend' asks",
                                 spec.label)
                to_send.append(spec)
            else:
                state = State.SKIPPED if self.op.on_unknown == "skip" else State.UNKNOWN
                self.records[spec.index] = placed_record(spec, state, error=_unknown_text(entry.error))
        return to_send

    def _refuse_invalid(self) -> None:
        """With ``on_invalid="fail"``, refuse every order if any is invalid; else record the invalid ones."""
        invalid = [spec for spec in self.specs if spec.error is not None]
        if invalid and self.op.on_invalid == "fail":
            raise MirPanelInputError(
                f"{len(invalid)} of {len(self.specs)} orders are invalid; no order was sent: "
                + "; ".join(f"{spec.label}: {spec.error}" for spec in invalid))
        for spec in invalid:
            self.records[spec.index] = placed_record(spec, State.INVALID, error=spec.error)

    def _check_balance(self, to_send: list[OrderSpec]) -> None:
        balance = self.op.hook.get_balance()
        self.currency = balance["currency"]
        total = sum(spec.cost or 0.0 for spec in to_send)
        unpriced = sum(1 for spec in to_send if spec.cost is None)
        note = f" ({unpriced} orders without an estimate not counted)" if unpriced else ""
        if total > balance["balance"]:
            raise MirPanelError(
                f"the estimated cost {total:,.2f} {self.currency or ''} of {len(to_send)} orders exceeds the balance "
                f"{balance['balance']:,.2f} {self.currency or ''}{note}; no order was sent")
        self.balance_note = f"; balance {balance['balance']:,.2f} {self.currency or ''} covered it{note}"

    # -- sending -----------------------------------------------------------------------------------

    def _place(self, to_send: list[OrderSpec]) -> None:
        limit = self.op.max_concurrency or self.op.hook.settings.concurrency
        workers = max(1, min(limit, len(to_send)))
        if workers == 1:
            placed = [self._place_one(spec) for spec in to_send]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mirpanel-add") as pool:
                placed = list(pool.map(self._place_one, to_send))
        for spec, record in zip(to_send, placed, strict=True):
            self.records[spec.index] = record

    def _stop_all(self, reason: str) -> None:
        with self._stop:
            self.stop_reason = self.stop_reason or reason

    def _place_one(self, spec: OrderSpec) -> Record:
        """Send one order, recording in the ledger that it started before sending anything."""
        if self.stop_reason:
            return placed_record(spec, State.NOT_SENT, error=f"not sent: placing stopped ({self.stop_reason})")
        assert spec.form is not None and spec.service is not None
        self.ledger.sending(spec.key, spec.digest)
        try:
            placed = self.op.hook.add_order(spec.service, **spec.params)
        except Exception as error:
            return self._failed(spec, error)
        try:
            self.ledger.placed(spec.key, spec.digest, placed["order"], spec.cost)
        except Exception:
            self.log.exception("Order %s of %s was placed but the ledger could not record it: a retry will "
                               "report it as unknown", placed["order"], spec.label)
        return placed_record(spec, State.PLACED, placed["order"])

    def _failed(self, spec: OrderSpec, error: Exception) -> Record:
        """Record a failed add: refused and never-sent orders may be placed again, anything else not."""
        if isinstance(error, (MirPanelInsufficientFundsError, MirPanelAuthError)):
            self._stop_all(error.panel_message)
        if isinstance(error, MirPanelAPIError):
            state, text = State.REFUSED, error.panel_message
        elif isinstance(error, MirPanelTransientError) and not error.request_sent:
            state, text = State.NOT_SENT, f"not sent: {error}"
        elif isinstance(error, MirPanelInputError):
            state, text = State.INVALID, str(error)
        else:
            cause = _cause(error)
            self.ledger.unknown(spec.key, spec.digest, cause)
            return placed_record(spec, State.UNKNOWN, error=_unknown_text(cause))
        self.ledger.refused(spec.key, spec.digest, text)
        return placed_record(spec, state, error=text)

    # -- reporting ---------------------------------------------------------------------------------

    def _by_state(self) -> dict[str, list[Record]]:
        grouped: dict[str, list[Record]] = {}
        for record in self.records.values():
            grouped.setdefault(record["state"], []).append(record)
        return grouped

    def summary(self) -> str:
        """One line: ``placed 18 of 20 orders (2 on an earlier try), 1 refused: 12 (Bad link); …``."""
        grouped = self._by_state()
        placed = grouped.get(State.PLACED.value, [])
        line = f"placed {len(placed)} of {len(self.specs)} orders"
        if self.earlier:
            line += f" ({len(self.earlier)} on an earlier try)"
        for state in State:
            if state is not State.PLACED and grouped.get(state.value):
                line += f", {len(grouped[state.value])} {state.value}: {_errors_by_id(grouped[state.value], 'key')}"
        spent = sum(record["cost"] or 0.0 for index, record in self.records.items()
                    if record["state"] == State.PLACED.value and index not in self.earlier)
        spent_text = f"; spent ~{spent:,.2f} {self.currency or ''}".rstrip()
        return line + spent_text + " (estimated from the catalogue rates)" + self.balance_note

    def failure(self) -> str | None:
        """Why the task fails (orders not placed), or None."""
        failed_states = {State.REFUSED, State.NOT_SENT, State.INVALID, State.CONFLICT}
        if self.op.on_invalid == "skip":
            failed_states.discard(State.INVALID)
        if self.op.on_unknown != "skip":
            failed_states.add(State.UNKNOWN)
        failed = [record for record in self.records.values() if State(record["state"]) in failed_states]
        if not failed:
            return None
        text = "; ".join(f"key {record['key']} {record['state']}: {record['error']}" for record in failed[:20])
        more = f" … (+{len(failed) - 20} more)" if len(failed) > 20 else ""
        hint = (" Orders in state 'unknown' may exist on the panel: check its order list, then retry with "
                "on_unknown='skip' or 'resend'." if any(r["state"] == State.UNKNOWN.value for r in failed) else "")
        return f"{len(failed)} of {len(self.specs)} orders were not placed: {text}{more}.{hint}"


def _cause(error: Exception) -> str:
    return error.cause if isinstance(error, MirPanelAmbiguousOrderError) else f"{type(error).__name__}: {error}"


def _unknown_text(cause: str | None) -> str:
    detail = f" ({cause})" if cause else " (the try ended between sending it and recording the reply)"
    return f"outcome unknown{detail}; not resent: check the panel's order list before placing it again"


# ---------------------------------------------------------------------------------------------
# Statuses, refills, cancels
# ---------------------------------------------------------------------------------------------


class _OrderIdsOperator(MirPanelBaseOperator):
    """An operator acting on any number of orders (``order_ids``: a list, or text like ``"1,2,3"``)."""

    template_fields: Sequence[str] = ("order_ids",)

    def __init__(self, *, order_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order_ids = order_ids

    def _ids(self) -> list[int]:
        return normalize_ids(self.order_ids, "order")


class OrderStatusOperator(_OrderIdsOperator):
    """A status snapshot of any number of orders, for ETL (asked 100 IDs per request).

    XCom: one record per distinct order ID, in input order: ``order, status, charge, start_count,
    remains, currency, error, checked_at`` (UTC, ISO-8601). An ID the panel does not know has
    ``status`` None and the panel's text in ``error``; it does not fail the task.

    :param order_ids: the order IDs (a list, an ``XComArg``, or text such as ``"1,2,3"``).
    """

    def execute(self, context: Context) -> list[Record]:
        records = self.hook.get_orders_status(self._ids())
        checked_at = utc_now()
        for record in records:
            record[CHECKED_AT] = checked_at
        self.log.info("status of %d orders: %s", len(records), _status_counts(records))
        return records


def _status_counts(records: list[Record]) -> str:
    counts = Counter(str(record["status"]) for record in records if not record.get("error"))
    text = ", ".join(f"{status} {count}" for status, count in counts.most_common()) or "none known"
    errors = _errors_by_id(records, "order")
    return text + (f"; not checked: {errors}" if errors else "")


class _WriteOperator(_OrderIdsOperator):
    """Refill or cancel: per-order refusals are data, or fail the task with ``fail_on_error``."""

    verb = ""

    def __init__(self, *, fail_on_error: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_on_error = fail_on_error

    def _report(self, records: list[Record]) -> list[Record]:
        refused = [record for record in records if record.get("error")]
        line = f"{self.verb} {len(records) - len(refused)} of {len(records)} orders"
        if refused:
            line += f"; {len(refused)} refused: {_errors_by_id(refused, 'order')}"
        self.log.info(line)
        if refused and self.fail_on_error:
            raise MirPanelError(line)
        return records


class RefillOperator(_WriteOperator):
    """Request a refill of any number of orders (100 per request).

    XCom: one record per distinct order: ``order, refill, error`` — the refill ID, or the panel's
    reason (e.g. "Order not eligible for refill.") in ``error``. Feed the refill IDs to
    :class:`~airflow_provider_mirpanel.sensors.mirpanel.RefillStatusSensor`.

    :param order_ids: the order IDs.
    :param fail_on_error: fail the task (after all requests) when the panel refused any refill.
    """

    verb = "refill requested for"

    def execute(self, context: Context) -> list[Record]:
        return self._report(self.hook.refill_orders(self._ids()))


class CancelOrdersOperator(_WriteOperator):
    """Cancel any number of orders (100 per request).

    XCom: one record per distinct order: ``order, cancel, error`` — ``cancel`` True when the panel
    accepted the cancellation, else the panel's reason in ``error``.

    :param order_ids: the order IDs.
    :param fail_on_error: fail the task (after all requests) when the panel refused any cancel.
    """

    verb = "cancel accepted for"

    def execute(self, context: Context) -> list[Record]:
        return self._report(self.hook.cancel_orders(self._ids()))


# ---------------------------------------------------------------------------------------------
# Balance
# ---------------------------------------------------------------------------------------------


class BalanceCheckOperator(MirPanelBaseOperator):
    """Read the balance; with ``min_balance``, act when it is below the threshold.

    XCom: the balance record ``{"balance": 100.84, "currency": "USD", "checked_at": "…"}`` (one
    dict; ``to_dataframe`` takes it as one row).

    :param min_balance: the threshold (templated; text is read as a number). None: just read it.
    :param on_low: when the balance is below ``min_balance``: ``"fail"`` (default; the task fails
        without retries, so ``on_failure_callback`` and notifiers alert), ``"skip"`` (the task is
        skipped, and with it what depends on it) or ``"warn"`` (a warning in the log).
    """

    template_fields: Sequence[str] = ("min_balance",)

    def __init__(self, *, min_balance: Any = None, on_low: str = "fail", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_balance = min_balance
        self.on_low = _choice("on_low", on_low, ON_LOW)

    def execute(self, context: Context) -> Record:
        record = {**self.hook.get_balance(), CHECKED_AT: utc_now()}
        threshold = self._threshold()
        currency = f" {record['currency']}" if record["currency"] else ""
        if threshold is None or record["balance"] >= threshold:
            limit = f" (threshold {threshold:,.2f}{currency})" if threshold is not None else ""
            self.log.info("balance %s%s%s", f"{record['balance']:,.2f}", currency, limit)
            return record
        message = f"balance {record['balance']:,.2f}{currency} is below the threshold {threshold:,.2f}{currency}"
        if self.on_low == "warn":
            self.log.warning(message)
            return record
        if self.on_low == "skip":
            raise AirflowSkipException(message)
        raise AirflowFailException(message)

    def _threshold(self) -> float | None:
        if self.min_balance in (None, ""):
            return None
        threshold = to_float(self.min_balance)
        if threshold is None:
            raise MirPanelInputError(f"min_balance must be a number, got {self.min_balance!r}")
        return threshold
