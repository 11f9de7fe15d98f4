"""Records to pandas: the operators' and sensors' XCom values as typed DataFrames.

Every operator and sensor of this provider returns *records*: flat dicts (a list of them, or one
for the balance) that travel through XCom as JSON. :func:`to_dataframe` turns them into a
DataFrame with explicit, nullable dtypes, so an ETL task downstream gets the same columns and
types whether the panel sent ``"remains": "Unknown"``, a number as a string, or nothing at all::

    from airflow_provider_mirpanel.records import to_dataframe

    @task
    def load(records):
        frame = to_dataframe(records)  # kind inferred from the columns
        frame.to_parquet(...)

One table (:data:`DTYPES`) gives each column's dtype; :data:`KIND_COLUMNS` lists the columns each
kind of record always has, so even an empty list of a known kind gives the right empty frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, TypedDict

from airflow_provider_mirpanel.protocol import (
    BALANCE_FIELDS,
    CANCEL_FIELDS,
    INT_PARAMS,
    ORDER_PARAMS,
    ORDER_STATUS_FIELDS,
    REFILL_FIELDS,
    REFILL_STATUS_FIELDS,
    SERVICE_FIELDS,
)

if TYPE_CHECKING:  # pandas is imported when a frame is made, not when a DAG file imports the operators
    import pandas as pd

ID = "Int64"
COUNT = "Int64"
MONEY = "Float64"
FLAG = "boolean"
TEXT = "string"
TIMESTAMP = "datetime64[ns, UTC]"

#: When a record was read from the panel (UTC, ISO-8601 in XCom).
CHECKED_AT: Final = "checked_at"

#: A record of any kind, for code that handles every kind alike (the waits, the XCom plumbing).
#: Each kind's shape is a ``TypedDict`` next to its field tuple: the hooks' records in
#: :mod:`airflow_provider_mirpanel.protocol.replies`, the placement's :class:`PlacedOrderRecord` here.
Record = dict[str, Any]


def utc_now() -> str:
    """Return the current UTC time as ISO-8601 text: what ``checked_at`` holds in XCom."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


#: Columns every placed-order record has (the type parameters it was sent with follow).
PLACED_ORDER_FIELDS = ("key", "state", "order", "service", "link", "quantity", "cost", "error")


class PlacedOrderRecord(TypedDict):
    """What ``PlaceOrderOperator`` returns per order (the other parameters it was sent with follow)."""

    key: str  # the order's key in the placement ledger
    state: str  # placed, refused, not_sent, unknown, skipped, invalid or conflict
    order: int | None  # the panel's order ID once placed
    service: int
    link: str | None
    quantity: int | None
    cost: float | None
    error: str | None


#: The kinds of records and the columns each always has, in display order.
KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    "service": SERVICE_FIELDS,
    "order_status": (*ORDER_STATUS_FIELDS, CHECKED_AT),
    "placed_order": PLACED_ORDER_FIELDS,
    "refill": REFILL_FIELDS,
    "refill_status": (*REFILL_STATUS_FIELDS, CHECKED_AT),
    "cancel": CANCEL_FIELDS,
    "balance": (*BALANCE_FIELDS, CHECKED_AT),
}

#: Column -> dtype, for every column any record of this provider has.
DTYPES: dict[str, str] = {
    **{name: (COUNT if name in INT_PARAMS else TEXT) for name in ORDER_PARAMS},
    "service": ID,
    "order": ID,
    "refill": ID,
    "name": TEXT,
    "type": TEXT,
    "category": TEXT,
    "desc": TEXT,
    "rate": MONEY,
    "min": COUNT,
    "max": COUNT,
    "cancel": FLAG,
    "dripfeed": FLAG,
    "status": TEXT,
    "charge": MONEY,
    "start_count": COUNT,
    "remains": COUNT,
    "currency": TEXT,
    "balance": MONEY,
    "cost": MONEY,
    "key": TEXT,
    "state": TEXT,
    "error": TEXT,
    CHECKED_AT: TIMESTAMP,
}

#: The one column whose meaning depends on the kind: a service's ``refill`` is its refill flag.
KIND_DTYPES: dict[str, dict[str, str]] = {"service": {"refill": FLAG}}


def infer_kind(columns: Iterable[str]) -> str | None:
    """Return the kind of records with these columns, or None when they are not this provider's records."""
    cols = set(columns)
    if "balance" in cols:
        return "balance"
    if {"key", "state"} <= cols or {"order", "service"} <= cols:
        return "placed_order"
    if "service" in cols:
        return "service"
    if "order" in cols:
        for kind, marker in (("order_status", "status"), ("refill", "refill"), ("cancel", "cancel")):
            if marker in cols:
                return kind
        return None
    if {"refill", "status"} <= cols:
        return "refill_status"
    return None


def dtype_of(column: str, kind: str | None = None) -> str | None:
    """Return the dtype of a column in records of ``kind``; None for a column this provider does not know."""
    return KIND_DTYPES.get(kind or "", {}).get(column, DTYPES.get(column))


def to_dataframe(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None, kind: str | None = None
) -> pd.DataFrame:
    """Return a DataFrame of records with explicit dtypes.

    :param records: a list of records (any operator's or sensor's XCom value), or one record (the
        balance). None or an empty list gives an empty frame (with the kind's columns if known).
    :param kind: ``"service"``, ``"order_status"``, ``"placed_order"``, ``"refill"``,
        ``"refill_status"``, ``"cancel"`` or ``"balance"``; inferred from the columns when None.
    :return: the kind's columns first (always present, missing values as ``<NA>``), then any other
        columns in the order they first appear. IDs and counts are ``Int64``, money and rates
        ``Float64``, flags ``boolean``, text ``string``, ``checked_at`` ``datetime64[ns, UTC]``;
        unknown columns get pandas' best nullable dtype.
    :raises ValueError: for an unknown ``kind``.
    """
    import pandas as pd

    rows = [records] if isinstance(records, Mapping) else list(records or [])
    if kind is not None and kind not in KIND_COLUMNS:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(KIND_COLUMNS)}")
    seen = list(dict.fromkeys(column for row in rows for column in row))
    kind = kind or infer_kind(seen)
    columns = list(dict.fromkeys([*KIND_COLUMNS.get(kind or "", ()), *seen]))
    data = {column: pd.Series([row.get(column) for row in rows], dtype=object) for column in columns}
    return pd.DataFrame({column: _typed(values, dtype_of(column, kind)) for column, values in data.items()})


def _typed(values: pd.Series, dtype: str | None) -> pd.Series:
    import pandas as pd
    from pandas.api.types import pandas_dtype

    if dtype is None:
        return values.convert_dtypes() if len(values) else values.astype(pandas_dtype(TEXT))
    if dtype == TIMESTAMP:
        return pd.to_datetime(values, utc=True, format="ISO8601").astype(pandas_dtype(TIMESTAMP))
    if dtype == TEXT:
        values = values.map(lambda value: value if value is None or isinstance(value, str) else str(value))
    return values.astype(pandas_dtype(dtype))
