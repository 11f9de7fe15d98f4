"""The warehouse side of the MirPanel example DAGs: tables, the database connection, and every SQL statement.

The example DAGs keep what they buy and what they see in three tables of a real SQL database:

``orders``
    One row per order placed by ``mirpanel_campaign``: what was ordered (campaign, key, service,
    link, quantity, the service's refill/cancel flags, the estimated cost) and its latest known
    status (``status, charge, start_count, remains, currency, checked_at``). The campaign DAG
    writes a row as soon as the panel accepts the order, then the final status; the hourly
    ``mirpanel_status_etl`` keeps the rows of unfinished orders up to date.
``order_status_history``
    One row per order per status snapshot, keyed by ``(order_id, snapshot_at)`` where
    ``snapshot_at`` is the ETL run's data interval end: re-running an interval replaces its rows.
``refills``
    One row per refill request of ``mirpanel_auto_refill``: the order, the refill ID (or the
    panel's refusal in ``error``) and the refill's final status.

The database is the Airflow connection ``mirpanel_warehouse`` (:data:`WAREHOUSE_CONN_ID`), read with
SQLAlchemy, so the same DAGs run on SQLite (the default of ``make demo``) and PostgreSQL::

    # SQLite: a file
    AIRFLOW_CONN_MIRPANEL_WAREHOUSE='{"conn_type": "sqlite", "host": "/data/mirpanel.db"}'
    # PostgreSQL (pip install psycopg2-binary, or the postgres provider)
    AIRFLOW_CONN_MIRPANEL_WAREHOUSE='{"conn_type": "postgres", "host": "db", "port": 5432,
                                      "login": "etl", "password": "...", "schema": "marketing"}'

Tables are created when missing (:func:`get_engine` does it). All statements are SQLAlchemy Core,
so they are portable across databases; each function runs in one transaction.

This file is a helper module, not a DAG: ``.airflowignore`` keeps the DAG processor from parsing it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL

from airflow_provider_mirpanel.assets.lineage import ORDERS, REFILLS, SERVICES, collect, dataset_uri
from airflow_provider_mirpanel.protocol import ORDER_TERMINAL_STATUSES

log = logging.getLogger(__name__)

#: The Airflow connection of the warehouse database.
WAREHOUSE_CONN_ID = "mirpanel_warehouse"

#: The Airflow connection of the panel (the provider's default).
PANEL_CONN_ID = "mirpanel_default"

#: Seconds between two status checks of the sensors in the example DAGs. One minute suits real
#: panels (orders take minutes to days); ``make demo`` sets the variable to 2 for its fast sandbox.
POKE_INTERVAL = float(os.environ.get("MIRPANEL_EXAMPLES_POKE_INTERVAL", "60"))

#: Statuses after which an order does not change any more.
FINISHED_STATUSES = tuple(sorted(ORDER_TERMINAL_STATUSES))

Money = Numeric(18, 6, asdecimal=False)
Timestamp = DateTime(timezone=True)

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False, comment="the panel's order ID"),
    Column("campaign", String(200), nullable=False),
    Column("order_key", String(200), nullable=False, comment="the row's key in the campaign file"),
    Column("service", Integer, nullable=False),
    Column("service_name", Text),
    Column("link", Text),
    Column("quantity", BigInteger),
    Column("refill_enabled", Boolean, comment="the service offers refills"),
    Column("cancel_enabled", Boolean, comment="the service accepts cancels"),
    Column("estimated_cost", Money, comment="rate x quantity / 1000 when placed"),
    Column("placed_at", Timestamp, nullable=False),
    Column("placed_by_run", String(250), comment="the Airflow run that placed it"),
    Column("status", String(40), comment="latest known status; NULL until first checked"),
    Column("charge", Money, comment="what the panel charged, net of refunds"),
    Column("start_count", BigInteger),
    Column("remains", BigInteger),
    Column("currency", String(10)),
    Column("checked_at", Timestamp, comment="when the status was read"),
    UniqueConstraint("campaign", "order_key", name="uq_orders_campaign_key"),
)

order_status_history = Table(
    "order_status_history",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("snapshot_at", Timestamp, primary_key=True, comment="the ETL run's data interval end"),
    Column("status", String(40)),
    Column("charge", Money),
    Column("start_count", BigInteger),
    Column("remains", BigInteger),
    Column("currency", String(10)),
    Column("error", Text, comment="why the panel could not report the order"),
    Column("checked_at", Timestamp),
    Column("run_id", String(250)),
)

refills = Table(
    "refills",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("requested_for", Timestamp, primary_key=True, comment="the auto-refill run's data interval end"),
    Column("refill_id", BigInteger, comment="NULL when the panel refused the refill"),
    Column("error", Text, comment="the panel's refusal"),
    Column("status", String(40), comment="NULL until the refill finished"),
    Column("requested_at", Timestamp, nullable=False),
    Column("checked_at", Timestamp),
    Column("run_id", String(250)),
)

# -- the connection -----------------------------------------------------------------------------

#: SQLAlchemy drivers of common Airflow connection types (override with the extra ``sqlalchemy_scheme``).
SCHEMES = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql+mysqldb",
    "mssql": "mssql+pymssql",
}


def sqlalchemy_url(conn: Any) -> URL:
    """The SQLAlchemy URL of an Airflow connection (SQLite: the file in ``host``, or in ``schema``)."""
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError(f"connection {conn.conn_id!r}: give the SQLite file's path as host")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite", database=path)
    scheme = conn.extra_dejson.get("sqlalchemy_scheme") or SCHEMES.get(conn_type, conn_type)
    return URL.create(
        scheme,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    )


@cache
def _engine(url: URL) -> Engine:
    engine = create_engine(url)
    metadata.create_all(engine, checkfirst=True)
    return engine


def get_engine(conn_id: str = WAREHOUSE_CONN_ID) -> Engine:
    """The engine of the warehouse connection, its tables created when missing (one engine per process)."""
    from airflow.sdk import BaseHook

    return _engine(sqlalchemy_url(BaseHook.get_connection(conn_id)))


# -- small conversions --------------------------------------------------------------------------


# -- lineage --------------------------------------------------------------------------------------


def table_uri(url: URL, table: Table) -> str | None:
    """The asset URI of a warehouse table, in the form its database's Airflow provider turns into OpenLineage.

    PostgreSQL (apache-airflow-providers-postgres): ``postgres://host:port/database/schema/table``,
    the dataset ``database.schema.table`` in ``postgres://host:port``; MySQL
    (apache-airflow-providers-mysql): ``mysql://host:port/database/table``. None for SQLite and the
    rest, which no provider translates: their lineage shows the panel's side only.
    """
    backend = url.get_backend_name()
    if not url.host or not url.database:
        return None
    if backend == "postgresql":
        return f"postgres://{url.host}:{url.port or 5432}/{url.database}/{table.schema or 'public'}/{table.name}"
    if backend == "mysql":
        return f"mysql://{url.host}:{url.port or 3306}/{url.database}/{table.name}"
    return None


def report_lineage(engine: Engine, reads: Sequence[str], writes: Sequence[Table]) -> None:
    """Tell Airflow's hook-level lineage that this task loads panel datasets into warehouse tables.

    ``reads`` are the panel's datasets (:mod:`airflow_provider_mirpanel.assets.lineage`) of the connection
    :data:`PANEL_CONN_ID`; with OpenLineage a lineage tool draws the edge panel → table. Best effort:
    never fails the load.
    """
    tables = [uri for uri in (table_uri(engine.url, table) for table in writes) if uri]
    collect(engine, [dataset_uri(PANEL_CONN_ID, name) for name in reads], tables)


def utc(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from a datetime or ISO-8601 text (the records' ``checked_at``)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


#: The columns of ``orders`` a status record sets.
STATUS_COLUMNS = ("status", "charge", "start_count", "remains", "currency", "checked_at")


def _status_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """The status columns of an order status record (``OrderStatusOperator`` / ``OrderStatusSensor``)."""
    return {
        "status": record.get("status"),
        "charge": record.get("charge"),
        "start_count": _int(record.get("start_count")),
        "remains": _int(record.get("remains")),  # some panels say "Unknown"
        "currency": record.get("currency"),
        "checked_at": utc(record.get("checked_at")),
    }


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- orders -------------------------------------------------------------------------------------


def placed_keys(engine: Engine, campaign: str) -> set[str]:
    """The keys of a campaign's rows that already have an order."""
    with engine.connect() as conn:
        return set(conn.scalars(select(orders.c.order_key).where(orders.c.campaign == campaign)))


def record_placed(
    engine: Engine,
    campaign: str,
    records: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    run_id: str | None,
) -> int:
    """Insert the orders the panel accepted (``PlaceOrderOperator`` records in state ``placed``).

    Orders already in the table (same order ID) are left as they are, so recording twice is safe.
    ``services`` are ``ServicesOperator`` records: they give the service's name and refill/cancel flags.
    """
    report_lineage(engine, [ORDERS, SERVICES], [orders])
    catalogue = {service["service"]: service for service in services}
    placed = [record for record in records if record.get("state") == "placed" and record.get("order")]
    if not placed:
        return 0
    placed_at = now()
    with engine.begin() as conn:
        known = set(
            conn.scalars(select(orders.c.order_id).where(orders.c.order_id.in_([record["order"] for record in placed])))
        )
        rows = []
        for record in placed:
            if record["order"] in known:
                continue
            service = catalogue.get(record["service"], {})
            rows.append(
                {
                    "order_id": record["order"],
                    "campaign": campaign,
                    "order_key": str(record["key"]),
                    "service": record["service"],
                    "service_name": service.get("name"),
                    "link": record.get("link"),
                    "quantity": record.get("quantity"),
                    "refill_enabled": service.get("refill"),
                    "cancel_enabled": service.get("cancel"),
                    "estimated_cost": record.get("cost"),
                    "placed_at": placed_at,
                    "placed_by_run": run_id,
                }
            )
        if rows:
            conn.execute(insert(orders), rows)
    return len(rows)


def update_statuses(engine: Engine, records: Iterable[Mapping[str, Any]]) -> int:
    """Set the latest status of orders from status records; records with an ``error`` are skipped.

    A record older than what the row holds (``checked_at``) does not overwrite it.
    """
    report_lineage(engine, [ORDERS], [orders])
    rows = [
        {f"new_{name}": value for name, value in {"order_id": record["order"], **_status_values(record)}.items()}
        for record in records
        if not record.get("error")
    ]
    if not rows:
        return 0
    statement = (
        update(orders)
        .where(orders.c.order_id == bindparam("new_order_id"))
        .where(or_(orders.c.checked_at.is_(None), orders.c.checked_at <= bindparam("new_checked_at")))
        .values({name: bindparam(f"new_{name}") for name in STATUS_COLUMNS})
    )
    with engine.begin() as conn:
        return conn.execute(statement, rows).rowcount


def open_order_ids(engine: Engine, limit: int | None = None) -> list[int]:
    """IDs of the orders not known to be finished (never checked, or in a non-terminal status), oldest first."""
    query = (
        select(orders.c.order_id)
        .where(or_(orders.c.status.is_(None), orders.c.status.not_in(FINISHED_STATUSES)))
        .order_by(orders.c.order_id)
    )
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return list(conn.scalars(query))


def replace_snapshot(
    engine: Engine, snapshot_at: datetime, records: Iterable[Mapping[str, Any]], run_id: str | None
) -> tuple[int, int]:
    """Store one status snapshot: delete the interval's rows, insert the new ones, update ``orders``.

    All in one transaction, so a re-run of the same interval replaces its snapshot instead of
    adding to it. Returns (rows replaced, rows inserted).
    """
    report_lineage(engine, [ORDERS], [order_status_history, orders])
    snapshot_at = utc(snapshot_at) or now()
    rows = [
        {
            "order_id": record["order"],
            "snapshot_at": snapshot_at,
            "error": record.get("error"),
            "run_id": run_id,
            **_status_values(record),
        }
        for record in records
    ]
    with engine.begin() as conn:
        replaced = conn.execute(
            delete(order_status_history).where(order_status_history.c.snapshot_at == snapshot_at)
        ).rowcount
        if rows:
            conn.execute(insert(order_status_history), rows)
    update_statuses(engine, records)
    return replaced, len(rows)


def campaign_orders(engine: Engine, campaign: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``orders`` (of one campaign), as dicts, by order ID."""
    query = select(orders).order_by(orders.c.order_id)
    if campaign is not None:
        query = query.where(orders.c.campaign == campaign)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


# -- refills ------------------------------------------------------------------------------------


def refill_candidates(
    engine: Engine, cooldown: timedelta, guarantee: timedelta, limit: int, as_of: datetime | None = None
) -> list[int]:
    """Finished orders of refill-enabled services that may need a refill.

    Completed or Partial, placed within ``guarantee`` (a service's refill period), and without a
    refill requested in the last ``cooldown`` (refused requests count too: the panel said no).
    """
    as_of = utc(as_of) or now()
    recent = select(refills.c.order_id).where(refills.c.requested_at >= as_of - cooldown)
    query = (
        select(orders.c.order_id)
        .where(orders.c.refill_enabled.is_(True))
        .where(orders.c.status.in_(("Completed", "Partial")))
        .where(orders.c.placed_at >= as_of - guarantee)
        .where(orders.c.order_id.not_in(recent))
        .order_by(orders.c.order_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.scalars(query))


def record_refill_requests(
    engine: Engine, requested_for: datetime, records: Iterable[Mapping[str, Any]], run_id: str | None
) -> int:
    """Store ``RefillOperator`` records (refill ID or refusal), replacing those of the same run interval."""
    report_lineage(engine, [REFILLS], [refills])
    requested_for = utc(requested_for) or now()
    requested_at = now()
    rows = [
        {
            "order_id": record["order"],
            "requested_for": requested_for,
            "refill_id": record.get("refill"),
            "error": record.get("error"),
            "requested_at": requested_at,
            "run_id": run_id,
        }
        for record in records
    ]
    with engine.begin() as conn:
        for chunk in _chunks([row["order_id"] for row in rows]):
            conn.execute(
                delete(refills).where(and_(refills.c.requested_for == requested_for, refills.c.order_id.in_(chunk)))
            )
        if rows:
            conn.execute(insert(refills), rows)
    return len(rows)


def update_refills(engine: Engine, records: Iterable[Mapping[str, Any]]) -> int:
    """Set the final status of refills from ``RefillStatusSensor`` records."""
    report_lineage(engine, [REFILLS], [refills])
    rows = [
        {
            "new_refill": record["refill"],
            "new_status": record.get("status"),
            "new_checked_at": utc(record.get("checked_at")),
        }
        for record in records
        if not record.get("error")
    ]
    if not rows:
        return 0
    statement = (
        update(refills)
        .where(refills.c.refill_id == bindparam("new_refill"))
        .values(status=bindparam("new_status"), checked_at=bindparam("new_checked_at"))
    )
    with engine.begin() as conn:
        return conn.execute(statement, rows).rowcount


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows per table (for logs and the demo)."""
    with engine.connect() as conn:
        return {
            table.name: conn.scalar(select(func.count()).select_from(table)) or 0
            for table in (orders, order_status_history, refills)
        }


def run_time(context: Mapping[str, Any]) -> datetime:
    """A run's key in the warehouse: its data interval end (the logical date for a cron schedule).

    A manual run without a logical date falls back to when it was triggered.
    """
    return context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
