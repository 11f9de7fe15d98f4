"""Operators that spend money: placing orders exactly once, and resolving orders of unknown outcome.

Both are thin: the rules live in :mod:`~airflow_provider_mirpanel.placement` (one try of a
placement) and :mod:`~airflow_provider_mirpanel.ledger` (what each order key became). Import them
from :mod:`airflow_provider_mirpanel.operators.mirpanel` like the other operators.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_mirpanel.assets.lineage import BALANCE, ORDERS, SERVICES
from airflow_provider_mirpanel.exceptions import MirPanelInputError
from airflow_provider_mirpanel.links.order_page import (
    ORDER_URL_EXTRA,
    ORDER_URL_XCOM_KEY,
    PanelOrderLink,
    order_page_url,
)
from airflow_provider_mirpanel.operators.base import choice
from airflow_provider_mirpanel.operators.scoped import ScopedLedgerOperator, ScopeWait
from airflow_provider_mirpanel.placement.ledger import LedgerEntry, LedgerState
from airflow_provider_mirpanel.placement.order_rows import keyless_rows, parse_order_rows
from airflow_provider_mirpanel.placement.run import ON_INVALID, ON_UNKNOWN, PlacementOptions, PlacementRun
from airflow_provider_mirpanel.protocol import OrderParameter, to_int
from airflow_provider_mirpanel.records import Record
from airflow_provider_mirpanel.utils.arguments import NumberArgument, RowsArgument
from airflow_provider_mirpanel.utils.listing import listing
from airflow_provider_mirpanel.version_compat import STATE_STORES, Context

#: The XCom a scoped placement leaves when orders' outcomes are unknown: ``{"ledger_scope", "mirpanel_conn_id",
#: "orders": [{"key", "service", "link"}]}`` (the ledger keeps only keys; the MirPanel page shows these).
UNKNOWN_ORDERS_XCOM_KEY = "mirpanel_unknown_orders"
#: At most this many orders in it (a placement of unknown outcomes is stopped long before).
MAX_UNKNOWN_ORDERS_XCOM = 1000


class PlaceOrderOperator(ScopedLedgerOperator):
    """Place one order or many, each exactly once across task retries, DAG runs and concurrent writers.

    .. seealso::
        ``docs/reference.md``, "PlaceOrderOperator": what it does, returns and raises; how to use it:
        ``docs/operators.md`` ("PlaceOrderOperator", "Concurrent writers of a scope").

    :param service: the service ID of a single order.
    :param link: its link.
    :param quantity: its quantity.
    :param order_parameters: its other parameters (by the service's type), e.g. ``{"runs": 5, "interval": 30}``.
    :param orders: many orders (dicts with ``service``, the type's parameters and a ``key``), instead of
        ``service``/``link``/``quantity``/``order_parameters``.
    :param check_balance: check that the balance covers the estimated cost before placing anything.
    :param on_unknown: (templated) an order whose outcome is unknown from an earlier try or run:
        ``"fail"`` (default), ``"skip"`` or ``"resend"`` (may duplicate a paid order).
    :param on_invalid: ``"fail"`` (default: refuse all orders when any is invalid) or ``"skip"``.
    :param ledger_scope: (templated) the name of a ledger scope that outlives DAG runs; None keeps the
        ledger per task instance.
    :param ledger_asset: the asset whose state store holds the scope (default: the connection's).
    :param ledger_lease: seconds a scope's lease lasts without renewal (default 60).
    :param ledger_wait_poll: seconds between looks at a held scope while waiting (default 5).
    :param ledger_wait_timeout: how long to wait for a held scope before failing (default 24 hours).
    :param deferrable: wait for a held scope deferred, without a worker slot (default True).
    :param ledger_window: the most orders whose ``sending`` marks are written in one go (1..100, default 50).
    :param services: (templated) ``ServicesOperator`` records to check the orders against, instead of a
        ``services`` request on every try.
    :param max_concurrency: orders in flight at once (default: the connection's ``concurrency``).
    """

    template_fields: Sequence[str] = (
        "service",
        "link",
        "quantity",
        "order_parameters",
        "orders",
        "on_unknown",
        "ledger_scope",
        "services",
        "mirpanel_conn_id",
    )
    template_fields_renderers = {"order_parameters": "json", "orders": "json"}
    ui_color = "#f7d08a"
    operator_extra_links = (PanelOrderLink(),)
    lineage_outputs = (ORDERS,)

    def __init__(
        self,
        *,
        service: int | str | None = None,
        link: str | None = None,
        quantity: NumberArgument | None = None,
        order_parameters: Mapping[str, OrderParameter] | None = None,
        orders: RowsArgument | None = None,
        check_balance: bool = False,
        on_unknown: str = "fail",
        on_invalid: str = "fail",
        ledger_scope: str | None = None,
        ledger_window: int = 50,
        services: RowsArgument | None = None,
        max_concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(ledger_scope=ledger_scope, **kwargs)
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
        self.on_unknown = on_unknown if "{{" in str(on_unknown) else choice("on_unknown", on_unknown, ON_UNKNOWN)
        self.on_invalid = choice("on_invalid", on_invalid, ON_INVALID)
        self.ledger_window = ledger_window
        self.services = services
        self.max_concurrency = max_concurrency

    def _rows(self) -> list[Mapping[str, Any]]:
        if self.orders is not None:
            return parse_order_rows(self.orders)
        extra = self.order_parameters or {}
        if not isinstance(extra, Mapping):
            raise MirPanelInputError(f"order_parameters must be a dict, got {type(extra).__name__}")
        row = dict(extra)
        row.update(
            {
                name: value
                for name, value in (("service", self.service), ("link", self.link), ("quantity", self.quantity))
                if value is not None
            }
        )
        return [row]

    def _catalogue(self) -> list[Mapping[str, Any]] | None:
        if self.services is None:
            return None
        catalogue = parse_order_rows(self.services, "services")
        if any(to_int(service.get("service")) is None for service in catalogue):
            raise MirPanelInputError(
                "services must be ServicesOperator records (each with its 'service' ID); no order was sent"
            )
        return [{**service, "service": to_int(service["service"])} for service in catalogue]

    def run_scoped(self, context: Context, wait: ScopeWait | None) -> list[Record]:
        """Place the orders under the claimed scope (or the task's own ledger); the records of every row."""
        options = PlacementOptions(
            on_unknown=str(self.on_unknown).strip(),
            on_invalid=self.on_invalid,
            check_balance=self.check_balance,
            window=self.ledger_window,
            concurrency=self.max_concurrency or self.hook.settings.concurrency,
        )
        rows = self._rows()
        catalogue = self._catalogue()
        ledger = self.ledger_of(context)
        if not ledger.durable:
            why = " (Airflow before 3.3 has none)" if not STATE_STORES else ""
            self.log.warning(
                "No task_state_store in the context%s: the ledger lives only as long as this try, "
                "so a retry sends no order a try may have sent%s",
                why,
                "; this is a retry, so every order counts as possibly placed" if ledger.blind else "",
            )
        if ledger.scope is not None:
            _check_keys(context, rows)
        run = PlacementRun(self.hook, rows, ledger, options, self.log, catalogue=catalogue)
        self.claim_scope(context, ledger, wait, meanwhile=run.prepare)  # prepared while the claim waits
        try:
            records = run.execute()
        finally:
            ledger.release()
        self.log.info(run.summary())
        self._push_order_url(context, records)
        self._push_unknown_orders(context, records)
        failure = run.failure()
        if failure:
            raise failure
        return records

    def _push_order_url(self, context: Context, records: Sequence[Mapping[str, Any]]) -> None:
        """Leave the order page's URL for the "Panel order" link, when the connection has a pattern."""
        ti = context.get("ti")
        pattern = self.hook.get_connection(self.mirpanel_conn_id).extra_dejson.get(ORDER_URL_EXTRA)
        url = order_page_url(pattern, records)
        if ti is not None and url:
            ti.xcom_push(key=ORDER_URL_XCOM_KEY, value=url)

    def _push_unknown_orders(self, context: Context, records: Sequence[Mapping[str, Any]]) -> None:
        """Leave the service and link of the scope's orders of unknown outcome (the ledger keeps only keys)."""
        ti = context.get("ti")
        unknown = [
            {"key": record["key"], "service": record.get("service"), "link": record.get("link")}
            for record in records
            if record.get("state") in ("unknown", "skipped")
        ]
        if ti is not None and unknown and self.ledger_scope is not None and hasattr(ti, "xcom_push"):
            ti.xcom_push(
                key=UNKNOWN_ORDERS_XCOM_KEY,
                value={
                    "ledger_scope": self.ledger_scope,
                    "mirpanel_conn_id": self.mirpanel_conn_id,
                    "orders": unknown[:MAX_UNKNOWN_ORDERS_XCOM],
                },
            )

    def lineage_datasets(self) -> tuple[Sequence[str], Sequence[str]]:
        """Return the datasets read and written.

        Reads ``services`` unless given the catalogue, ``balance`` with ``check_balance``; writes ``orders``.
        """
        inputs = [name for name, read in ((SERVICES, self.services is None), (BALANCE, self.check_balance)) if read]
        return inputs, self.lineage_outputs


class ResolveOrdersOperator(ScopedLedgerOperator):
    """List a ledger scope's orders of unknown outcome, and record what a user found for them on the panel.

    .. seealso::
        ``docs/reference.md``, "ResolveOrdersOperator": what it does, returns and raises; how to use it:
        ``docs/operators.md`` ("Resolving unknown orders").

    :param ledger_scope: (templated) the scope's name, as given to ``PlaceOrderOperator``.
    :param resolutions: (templated) ``{key: order_id or "not_placed"}``; a dict or its JSON text. None lists only.
    :param ledger_asset: the ledger asset, when ``PlaceOrderOperator`` was given one.
    """

    ui_color = "#f2dcc2"

    template_fields: Sequence[str] = ("ledger_scope", "resolutions", "mirpanel_conn_id")
    lineage_inputs = (ORDERS,)
    template_fields_renderers = {"resolutions": "json"}

    def __init__(
        self, *, ledger_scope: str, resolutions: Mapping[str, int | str] | str | None = None, **kwargs: Any
    ) -> None:
        if ledger_scope is None:
            raise ValueError("ResolveOrdersOperator needs the ledger_scope whose orders it resolves")
        super().__init__(ledger_scope=ledger_scope, **kwargs)
        self.resolutions = resolutions

    def run_scoped(self, context: Context, wait: ScopeWait | None) -> list[Record]:
        """List the scope's orders of unknown outcome and record the resolutions given, under its lease."""
        wanted = parse_resolutions(self.resolutions)
        ledger = self.ledger_of(context)
        self.claim_scope(context, ledger, wait)
        try:
            entries = ledger.load()
            unresolved = ledger.unresolved(entries)
            resolved = ledger.resolve(wanted, confirm=self._check_order_ids, entries=entries) if wanted else {}
        finally:
            ledger.release()
        records = [
            _resolution_record(key, resolved.get(key, entry), key in resolved)
            for key, entry in {**unresolved, **resolved}.items()
        ]
        left = [key for key in unresolved if key not in resolved]
        self.log.info(
            "%s: %d keys resolved; %d of unknown outcome left%s",
            ledger.where,
            len(resolved),
            len(left),
            f": {listing(left)}" if left else "",
        )
        return records

    def _check_order_ids(self, orders: Mapping[str, int]) -> None:
        """Refuse order IDs the panel does not know, before anything is written."""
        if not orders:
            return
        statuses = {record["order"]: record for record in self.hook.get_orders_status(list(orders.values()))}
        unknown = [
            f"{key} → {order} ({statuses[order]['error']})"
            for key, order in orders.items()
            if order in statuses and statuses[order]["error"]
        ]
        if unknown:
            raise MirPanelInputError(f"the panel does not know these orders: {listing(unknown)}; nothing was written")


def parse_resolutions(value: Any) -> dict[str, int | None]:
    """``{key: order ID, or None for "not_placed"}`` from a dict or its JSON text, or MirPanelInputError."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            try:  # a dict rendered by Jinja is its Python repr
                value = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise MirPanelInputError(
                    "resolutions must be a dict (or its JSON text) of key → order ID or 'not_placed'"
                ) from None
    if not isinstance(value, Mapping):
        raise MirPanelInputError(
            f"resolutions must be a dict of key → order ID or 'not_placed', got {type(value).__name__}"
        )
    resolved: dict[str, int | None] = {}
    for key, order in value.items():
        if order in ("not_placed", None):
            resolved[str(key)] = None
            continue
        number = to_int(order)
        if number is None or number <= 0:
            raise MirPanelInputError(f"resolution of key {key!r} must be an order ID or 'not_placed', got {order!r}")
        resolved[str(key)] = number
    return resolved


def _resolution_record(key: str, entry: LedgerEntry, resolved: bool) -> Record:
    state = entry.state.value
    if resolved:
        state = "placed" if entry.state is LedgerState.PLACED else "not_placed"
    return {"key": key, "state": state, "order": entry.order, "error": None if resolved else entry.error}


def _check_keys(context: Context, rows: list[Mapping[str, Any]]) -> None:
    """Under a scope, a mapped task's rows need keys of their own: position keys repeat across chunks."""
    map_index = getattr(context.get("ti"), "map_index", None)
    keyless = keyless_rows(rows)
    if isinstance(map_index, int) and map_index >= 0 and keyless:
        raise MirPanelInputError(
            f"rows {listing(map(str, keyless))} have no 'key': under a ledger_scope a mapped task's rows each need "
            "a key of their own, since a row's position repeats across the mapped chunks (row 0 of two chunks "
            "would be one order). Add a key column (e.g. the campaign table's row ID); no order was sent"
        )
