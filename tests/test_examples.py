"""The example DAGs of dags_examples/: they import cleanly, and the campaign pipeline and the status ETL
run for real (``airflow dags test`` in a subprocess, its own AIRFLOW_HOME) against the sandbox panel,
leaving the expected rows in a SQLite warehouse.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from airflow_cli import airflow_home, run_airflow

from airflow_provider_mirpanel.protocol import ORDER_TERMINAL_STATUSES
from airflow_provider_mirpanel.sandbox import SandboxPanel

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags_examples"
EXAMPLE_DAGS = {"mirpanel_campaign", "mirpanel_status_etl", "mirpanel_balance_alert", "mirpanel_auto_refill"}


@pytest.fixture(scope="module")
def warehouse() -> Iterator[ModuleType]:
    """dags_examples/mirpanel_warehouse.py, imported as the DAGs import it (the DAGs folder on sys.path)."""
    sys.path.insert(0, str(DAGS))
    try:
        import mirpanel_warehouse

        yield mirpanel_warehouse
    finally:
        sys.path.remove(str(DAGS))


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow with a fresh, migrated SQLite metadata DB and dags_examples as its DAGs folder."""
    return airflow_home(tmp_path_factory.mktemp("examples-airflow-home"), DAGS, MIRPANEL_EXAMPLES_POKE_INTERVAL="1")


def dags_test(env: Mapping[str, str], dag_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airflow(env, "dags", "test", dag_id, *args)


def test_every_example_dag_imports(warehouse: ModuleType) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")

    assert bag.import_errors == {}
    assert set(bag.dags) == EXAMPLE_DAGS  # the helper module and the data folder are .airflowignore'd
    for dag in bag.dags.values():
        assert {"mirpanel", "example"} <= set(dag.tags), dag.dag_id
        assert dag.doc_md, dag.dag_id
    campaign = bag.dags["mirpanel_campaign"]
    assert {"campaign", "campaign_csv", "max_spend", "wait_for_completion"} <= set(campaign.params)
    assert campaign.task_dict["wait_for_orders"].upstream_task_ids == {"record_placed", "should_wait"}
    assert campaign.task_dict["services"].upstream_task_ids == {"read_campaign"}
    assert bag.dags["mirpanel_balance_alert"].task_dict["check_balance"].on_failure_callback


def test_warehouse_url_from_an_airflow_connection(warehouse: ModuleType, tmp_path: Path) -> None:
    from airflow.sdk import Connection

    sqlite = Connection(conn_id="w", conn_type="sqlite", host=str(tmp_path / "sub" / "w.db"))
    assert warehouse.sqlalchemy_url(sqlite).render_as_string() == f"sqlite:///{tmp_path}/sub/w.db"
    assert (tmp_path / "sub").is_dir()
    postgres = Connection(conn_id="w", conn_type="postgres", host="db", port=5432, login="etl", password="p@ss",
                          schema="marketing")
    assert (warehouse.sqlalchemy_url(postgres).render_as_string(hide_password=False)
            == "postgresql+psycopg2://etl:p%40ss@db:5432/marketing")
    psycopg3 = Connection(conn_id="w", conn_type="postgres", host="db",
                          extra=json.dumps({"sqlalchemy_scheme": "postgresql+psycopg"}))
    assert warehouse.sqlalchemy_url(psycopg3).drivername == "postgresql+psycopg"


def rows(engine: Any, table: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(table))]


def test_campaign_pipeline_then_status_etl(panel: SandboxPanel, airflow_env: dict[str, str], warehouse: ModuleType,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    monkeypatch.setenv("AIRFLOW_CONN_MIRPANEL_WAREHOUSE", connection)
    env = {**airflow_env, **panel.env(), "AIRFLOW_CONN_MIRPANEL_WAREHOUSE": connection}
    engine = warehouse.get_engine()
    campaign = list(csv.DictReader((DAGS / "data" / "campaign.csv").open()))
    catalogue = panel.catalogue.by_id

    # 1. The campaign: every row placed once, recorded, waited for (orders take ~2 s at this speed:
    # the sensor defers, and dags test runs its trigger inline), final statuses loaded.
    panel.speed = 60
    result = dags_test(env, "mirpanel_campaign")
    assert "Deferring: the triggerer watches" in result.stdout
    orders = sorted(rows(engine, warehouse.orders), key=lambda row: row["order_id"])
    assert panel.count("add") == len(campaign) == len(orders)
    assert [row["order_key"] for row in orders] == [row["key"] for row in campaign]
    assert {row["campaign"] for row in orders} == {"spring_launch"}
    for row, wanted in zip(orders, campaign, strict=True):
        order = panel.state.orders[row["order_id"]]
        status, remains, charge, _ = order.read()
        assert (row["service"], row["link"], row["quantity"]) == (int(wanted["service"]), wanted["link"],
                                                                  int(wanted["quantity"]))
        assert (order.service, order.link, order.quantity) == (row["service"], row["link"], row["quantity"])
        assert row["status"] == status and row["status"] in ORDER_TERMINAL_STATUSES
        assert row["charge"] == pytest.approx(charge) and row["remains"] == remains
        assert row["refill_enabled"] == catalogue[row["service"]]["refill"]
        assert row["cancel_enabled"] == catalogue[row["service"]]["cancel"]
        assert row["estimated_cost"] == pytest.approx(float(catalogue[row["service"]]["rate"]) * row["quantity"] / 1000)
        assert row["checked_at"] is not None and row["placed_by_run"].startswith("manual__")

    # 2. Triggering the same campaign again buys nothing: its rows are already in the orders table.
    result = dags_test(env, "mirpanel_campaign")
    assert "every order of this campaign was placed by an earlier run" in result.stdout
    assert panel.count("add") == len(campaign) and len(rows(engine, warehouse.orders)) == len(campaign)

    # 3. The status ETL follows open orders: three in progress, placed outside the campaign run.
    open_ids = panel.create_orders(3, service=8094, quantity=1000, status="In progress", remains=400)
    warehouse.record_placed(engine, "outside", [
        {"key": str(order_id), "state": "placed", "order": order_id, "service": 8094, "link": f"l/{order_id}",
         "quantity": 1000, "cost": 0.0076} for order_id in open_ids], [], "test")
    assert warehouse.open_order_ids(engine) == open_ids
    interval = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    dags_test(env, "mirpanel_status_etl", interval.isoformat())

    history = rows(engine, warehouse.order_status_history)
    assert sorted(row["order_id"] for row in history) == open_ids  # only the open orders were asked about
    assert {(row["status"], row["remains"]) for row in history} == {("In progress", 400)}
    assert {warehouse.utc(row["snapshot_at"]) for row in history} == {interval}
    by_id = {row["order_id"]: row for row in rows(engine, warehouse.orders)}
    assert all(by_id[order_id]["status"] == "In progress" and by_id[order_id]["remains"] == 400
               for order_id in open_ids)

    # 4. A re-run of the same interval replaces its snapshot: no new rows, the newer statuses.
    panel.set_order(open_ids[0], "Completed")
    dags_test(env, "mirpanel_status_etl", interval.isoformat())
    history = rows(engine, warehouse.order_status_history)
    assert len(history) == 3 and sorted(row["order_id"] for row in history) == open_ids
    assert {row["order_id"]: row["status"] for row in history}[open_ids[0]] == "Completed"
    assert {row["order_id"]: row["status"] for row in rows(engine, warehouse.orders)}[open_ids[0]] == "Completed"
    assert warehouse.open_order_ids(engine) == open_ids[1:]
    assert panel.api_key not in json.dumps([rows(engine, table) for table in warehouse.metadata.tables.values()],
                                           default=str)
    engine.dispose()
