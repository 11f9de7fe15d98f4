"""Operators for MirPanel and every panel serving the Perfect Panel API v2.

Every operator returns *records* as its XCom value: flat dicts (lists of them) with the hook's
fields, ready for :func:`airflow_provider_mirpanel.records.to_dataframe`. Inputs are template
fields, so IDs and orders can come from Jinja or from an upstream task's ``XComArg``. Each
operator logs one line that sums up what it did.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from airflow_provider_mirpanel.assets.events import balance_asset as balance_asset_of
from airflow_provider_mirpanel.assets.lineage import BALANCE, ORDERS, REFILLS, SERVICES
from airflow_provider_mirpanel.balance.spending import BalanceHistory, Projection, assess, threshold
from airflow_provider_mirpanel.exceptions import MirPanelError
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.operators.base import MirPanelBaseOperator, as_list, choice
from airflow_provider_mirpanel.operators.orders import PlaceOrderOperator, ResolveOrdersOperator
from airflow_provider_mirpanel.protocol import (
    BalanceRecord,
    CancelRecord,
    OrderStatusRecord,
    RefillRecord,
    normalize_ids,
    to_text,
)
from airflow_provider_mirpanel.records import CHECKED_AT, Record, utc_now
from airflow_provider_mirpanel.utils.arguments import IdsArgument, NumberArgument
from airflow_provider_mirpanel.utils.listing import errors_by
from airflow_provider_mirpanel.version_compat import AirflowFailException, AirflowSkipException, Asset, Context

__all__ = [
    "BalanceCheckOperator",
    "CancelOrdersOperator",
    "MirPanelBaseOperator",
    "OrderStatusOperator",
    "PlaceOrderOperator",
    "RefillOperator",
    "ResolveOrdersOperator",
    "ServicesOperator",
]

ON_LOW = ("fail", "skip", "warn")
#: The balance asset's state-store key of the balance history.
HISTORY_KEY = "balance_history"


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


def _flat(record: Mapping[str, Any]) -> Record:
    """Return a record whose nested values (some panels nest extra fields) are JSON text."""
    return {name: to_text(value) if isinstance(value, (dict, list)) else value for name, value in record.items()}


class ServicesOperator(MirPanelBaseOperator):
    """Return the panel's catalogue as records, optionally filtered.

    .. seealso::
        ``docs/reference.md``, "ServicesOperator": what it does, returns and raises;
        how to use it: ``docs/operators.md``.

    :param service_ids: keep only these service IDs (a list, or text such as ``"1,2,3"``).
    :param category: keep services whose category contains this text (case-insensitive).
    :param name: keep services whose name contains this text (case-insensitive).
    :param service_type: keep services of this type, e.g. ``"Default"`` (case-insensitive).
    """

    ui_color = "#cfe8fc"

    template_fields: Sequence[str] = ("service_ids", "category", "name", "service_type", "mirpanel_conn_id")
    lineage_inputs = (SERVICES,)

    def __init__(
        self,
        *,
        service_ids: IdsArgument | None = None,
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
        """Return the catalogue's services that pass the filters (one request)."""
        keep = self._filter()  # invalid IDs are refused before the request
        services = self.hook.get_services()
        matching = [_flat(service) for service in services if keep(service)]
        self.log.info("%d of %d services match%s", len(matching), len(services), self._filters_text())
        return matching

    def _filter(self) -> Callable[[Mapping[str, Any]], bool]:
        wanted = set(normalize_ids(self.service_ids, "service")) if self.service_ids not in (None, "") else None
        texts = [(field, text.casefold()) for field, text in (("category", self.category), ("name", self.name)) if text]
        service_type = (self.service_type or "").casefold()

        def keep(service: Mapping[str, Any]) -> bool:
            if wanted is not None and service.get("service") not in wanted:
                return False
            if any(text not in str(service.get(field) or "").casefold() for field, text in texts):
                return False
            return not service_type or str(service.get("type") or "").casefold() == service_type

        return keep

    def _filters_text(self) -> str:
        filters = [
            f"{name} {value!r}"
            for name, value in (
                ("IDs", self.service_ids),
                ("category", self.category),
                ("name", self.name),
                ("type", self.service_type),
            )
            if value not in (None, "")
        ]
        return f" ({', '.join(filters)})" if filters else ""


# ---------------------------------------------------------------------------------------------
# Statuses, refills, cancels
# ---------------------------------------------------------------------------------------------


class _OrderIdsOperator(MirPanelBaseOperator):
    """An operator acting on any number of orders (``order_ids``: a list, or text like ``"1,2,3"``)."""

    template_fields: Sequence[str] = ("order_ids", "mirpanel_conn_id")

    def __init__(self, *, order_ids: IdsArgument, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order_ids = order_ids

    def _ids(self) -> list[int]:
        return normalize_ids(self.order_ids, "order")


class OrderStatusOperator(_OrderIdsOperator):
    """Return a status snapshot of any number of orders, for ETL (asked 100 IDs per request).

    .. seealso::
        ``docs/reference.md``, "OrderStatusOperator": what it does, returns and raises;
        how to use it: ``docs/operators.md``.

    :param order_ids: the order IDs (a list, an ``XComArg``, or text such as ``"1,2,3"``).
    """

    ui_color = "#d6f5d6"

    lineage_inputs = (ORDERS,)

    def execute(self, context: Context) -> list[OrderStatusRecord]:
        """Return the status record of each order (one request per 100 IDs)."""
        records = self.hook.get_orders_status(self._ids())
        checked_at = utc_now()
        for record in records:
            record[CHECKED_AT] = checked_at
        self.log.info("status of %d orders: %s", len(records), _status_counts(records))
        return records


def _status_counts(records: Sequence[Mapping[str, Any]]) -> str:
    counts = Counter(str(record["status"]) for record in records if not record.get("error"))
    text = ", ".join(f"{status} {count}" for status, count in counts.most_common()) or "none known"
    errors = errors_by(records, "order")
    return text + (f"; not checked: {errors}" if errors else "")


_Reported = TypeVar("_Reported", RefillRecord, CancelRecord)


class _WriteOperator(_OrderIdsOperator):
    """Refill or cancel: per-order refusals are data, or fail the task with ``fail_on_error``."""

    verb = ""

    def __init__(self, *, fail_on_error: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_on_error = fail_on_error

    def _report(self, records: list[_Reported]) -> list[_Reported]:
        refused = [record for record in records if record.get("error")]
        line = f"{self.verb} {len(records) - len(refused)} of {len(records)} orders"
        if refused:
            line += f"; {len(refused)} refused: {errors_by(refused, 'order')}"
        self.log.info(line)
        if refused and self.fail_on_error:
            raise MirPanelError(line)
        return records


class RefillOperator(_WriteOperator):
    """Request a refill of any number of orders (100 per request).

    .. seealso::
        ``docs/reference.md``, "RefillOperator": what it does, returns and raises;
        how to use it: ``docs/operators.md``.

    :param order_ids: the order IDs.
    :param fail_on_error: fail the task (after all requests) when the panel refused any refill.
    """

    ui_color = "#e8d9fc"

    verb = "refill requested for"
    lineage_inputs, lineage_outputs = (ORDERS,), (REFILLS,)

    def execute(self, context: Context) -> list[RefillRecord]:
        """Request the refills; return one record per order (fail as ``fail_on_error`` says)."""
        return self._report(self.hook.refill_orders(self._ids()))


class CancelOrdersOperator(_WriteOperator):
    """Cancel any number of orders (100 per request).

    .. seealso::
        ``docs/reference.md``, "CancelOrdersOperator": what it does, returns and raises;
        how to use it: ``docs/operators.md``.

    :param order_ids: the order IDs.
    :param fail_on_error: fail the task (after all requests) when the panel refused any cancel.
    """

    ui_color = "#f9c7c7"

    verb = "cancel accepted for"
    lineage_inputs, lineage_outputs = (ORDERS,), (ORDERS,)

    def execute(self, context: Context) -> list[CancelRecord]:
        """Cancel the orders; return one record per order (fail as ``fail_on_error`` says)."""
        return self._report(self.hook.cancel_orders(self._ids()))


# ---------------------------------------------------------------------------------------------
# Balance
# ---------------------------------------------------------------------------------------------


class BalanceCheckOperator(MirPanelBaseOperator):
    """Read the balance; with thresholds, act when it is low or runs out soon at the current spend rate.

    .. seealso::
        ``docs/reference.md``, "BalanceCheckOperator": what it does, returns and raises;
        the spend rate: ``docs/alerts-and-assets.md``.

    :param min_balance: alert when the balance is below this (templated; text is read as a number).
    :param runs_out_within_hours: alert when, at the spend rate, the balance runs out within this
        many hours (templated). Neither threshold: just read the balance.
    :param on_low: when an alert is due: ``"fail"`` (default; the task fails without retries),
        ``"skip"`` or ``"warn"``.
    :param balance_asset: the asset keeping the history (default: one per connection).
    """

    ui_color = "#fff2b3"

    template_fields: Sequence[str] = ("min_balance", "runs_out_within_hours", "mirpanel_conn_id")
    lineage_inputs = (BALANCE,)

    def __init__(
        self,
        *,
        min_balance: NumberArgument | None = None,
        runs_out_within_hours: NumberArgument | None = None,
        on_low: str = "fail",
        balance_asset: Asset | None = None,
        **kwargs: Any,
    ) -> None:
        self.balance_asset = balance_asset or balance_asset_of(
            kwargs.get("mirpanel_conn_id", MirPanelHook.default_conn_name)
        )
        kwargs["inlets"] = [*as_list(kwargs.get("inlets")), self.balance_asset]
        super().__init__(**kwargs)
        self.min_balance = min_balance
        self.runs_out_within_hours = runs_out_within_hours
        self.on_low = choice("on_low", on_low, ON_LOW)

    def execute(self, context: Context) -> BalanceRecord:
        """Read the balance, judge it against the thresholds and the history, act as ``on_low`` says."""
        minimum = threshold("min_balance", self.min_balance)  # refused before the request
        within = threshold("runs_out_within_hours", self.runs_out_within_hours)
        record = self.hook.get_balance()
        record[CHECKED_AT] = utc_now()
        projection = self._judge(context, record, minimum, within)
        if not projection.low:
            self.log.info("%s", projection.message())
            return record
        message = projection.message()
        if self.on_low == "warn":
            self.log.warning(message)
            return record
        if self.on_low == "skip":
            raise AirflowSkipException(message)
        raise AirflowFailException(message)

    def _judge(
        self, context: Context, record: BalanceRecord, minimum: float | None, within: float | None
    ) -> Projection:
        """Return the reading judged against the history, which it then joins (when there is a store)."""
        stores = context.get("asset_state_store")
        store = stores[self.balance_asset] if stores is not None else None
        history = BalanceHistory.from_json(store.get(HISTORY_KEY) if store is not None else None)
        now = time.time()
        projection = assess(history, record, now, minimum, within)
        updated = history.with_reading(now, projection.balance)
        if store is not None and updated != history:
            store.set(HISTORY_KEY, updated.to_json())
        return projection
