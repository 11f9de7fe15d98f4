"""The example DAGs of dags_examples/: they import cleanly, and the campaign pipeline and the status ETL
run for real (``airflow dags test`` in a subprocess, its own AIRFLOW_HOME) against the sandbox panel,
leaving the expected rows in a SQLite warehouse.
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support.airflow_cli import airflow_home, run_airflow, run_manually
from support.airflow_compat import STATE_STORES, dag_bag, needs_state_stores
from support.steering import once

from airflow_provider_mirpanel.operators.mirpanel import BalanceCheckOperator
from airflow_provider_mirpanel.protocol import ORDER_TERMINAL_STATUSES
from airflow_provider_mirpanel.sandbox import SandboxPanel

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags_examples"
EXAMPLE_DAGS = {
    "mirpanel_campaign",
    "mirpanel_status_etl",
    "mirpanel_balance_alert",
    "mirpanel_auto_refill",
    "mirpanel_resolve_orders",
    "mirpanel_balance_watch",
    "mirpanel_campaign_report",
}
#: Context variables that only a run with a logical date has: a manual run (from the UI, ``airflow dags
#: trigger`` or the REST API) has none, and a template naming one fails to render.
LOGICAL_DATE_ONLY = frozenset(
    {
        "logical_date",
        "ds",
        "ds_nodash",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
        "data_interval_start",
        "data_interval_end",
        "prev_data_interval_start_success",
        "prev_data_interval_end_success",
    }
)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow with a fresh, migrated SQLite metadata DB and dags_examples as its DAGs folder."""
    return airflow_home(tmp_path_factory.mktemp("examples-airflow-home"), DAGS, MIRPANEL_EXAMPLES_POKE_INTERVAL="1")


def dags_test(env: Mapping[str, str], dag_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airflow(env, "dags", "test", dag_id, *args)


@pytest.fixture(scope="module")
def example_bag(warehouse: ModuleType) -> Any:
    """The example DAGs, parsed as the DAG processor parses them."""

    return dag_bag(DAGS)


#: The examples that place into a ledger_scope (Airflow 3.3's asset state store).
SCOPED_EXAMPLES = {"mirpanel_campaign", "mirpanel_resolve_orders"}


def test_the_dag_processor_reads_only_the_dag_files_at_the_top() -> None:
    """The shared package ``mirpanel_examples/`` and ``data/`` are ``.airflowignore``'d, whatever the safe mode."""
    from airflow.utils.file import list_py_file_paths

    listed = {Path(path).relative_to(DAGS).as_posix() for path in list_py_file_paths(DAGS, safe_mode=False)}
    assert listed == {f"{dag_id}.py" for dag_id in EXAMPLE_DAGS}


def test_every_example_dag_imports(example_bag: Any) -> None:
    bag = example_bag
    if not STATE_STORES:  # below 3.3 a ledger_scope is refused when the DAG is parsed, saying why
        assert {Path(path).stem for path in bag.import_errors} == SCOPED_EXAMPLES
        assert all("needs Airflow 3.3" in error for error in bag.import_errors.values())
        assert set(bag.dags) == EXAMPLE_DAGS - SCOPED_EXAMPLES
        return
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


def templates(value: Any) -> Iterator[str]:
    """Every string in a template field's value (nested lists and dicts included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from templates(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from templates(item)


def callbacks(owner: Any) -> list[Any]:
    found = []
    for name in (
        "on_failure_callback",
        "on_success_callback",
        "on_retry_callback",
        "on_execute_callback",
        "on_skipped_callback",
    ):
        value = getattr(owner, name, None) or []
        found += value if isinstance(value, list) else [value]
    return found


def test_no_example_template_needs_a_logical_date(example_bag: Any) -> None:
    from jinja2 import meta

    checked = 0
    for dag in example_bag.dags.values():
        env = dag.get_template_env()
        owners = [*dag.tasks, *callbacks(dag), *(callback for task in dag.tasks for callback in callbacks(task))]
        for owner in owners:
            fields = getattr(owner, "template_fields", ())
            values = [getattr(owner, "partial_kwargs", {}), getattr(getattr(owner, "expand_input", None), "value", {})]
            values += [getattr(owner, field, None) for field in fields if not hasattr(owner, "partial_kwargs")]
            for text in (text for value in values for text in templates(value)):
                used = meta.find_undeclared_variables(env.parse(text))
                assert not used & LOGICAL_DATE_ONLY, f"{dag.dag_id}: {owner!r} renders {text!r}"
                checked += 1
    assert checked >= 3  # the alert text, the balance threshold, the campaign's service IDs


def test_the_balance_alert_renders_without_a_logical_date(
    panel: SandboxPanel, example_bag: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_mirpanel.version_compat import AirflowFailException

    dag = example_bag.dags["mirpanel_balance_alert"]
    task = dag.task_dict["check_balance"]
    with pytest.raises(AirflowFailException) as low:
        BalanceCheckOperator(task_id="check_balance", min_balance=5000).execute({})
    run_id = "manual__2026-11-30T10:00:00+00:00"
    # What a manual run's failure callback gets: no logical_date, ts, ds or data interval.
    context = {"dag": dag, "task": task, "run_id": run_id, "params": {"min_balance": 5000.0}, "exception": low.value}

    with caplog.at_level("ERROR"):
        for notifier in task.on_failure_callback:
            notifier(context)

    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"ALERT: MirPanel balance alert (mirpanel_balance_alert, run {run_id}): "
        "balance 1,000.00 USD is below the threshold 5,000.00 USD; "
        "spend rate unknown (no earlier reading yet), so no run-out time"
    ]


def test_warehouse_url_from_an_airflow_connection(warehouse: ModuleType, tmp_path: Path) -> None:
    from airflow.sdk import Connection

    sqlite = Connection(conn_id="w", conn_type="sqlite", host=str(tmp_path / "sub" / "w.db"))
    assert warehouse.sqlalchemy_url(sqlite).render_as_string() == f"sqlite:///{tmp_path}/sub/w.db"
    assert (tmp_path / "sub").is_dir()
    postgres = Connection(
        conn_id="w", conn_type="postgres", host="db", port=5432, login="etl", password="p@ss", schema="marketing"
    )
    assert (
        warehouse.sqlalchemy_url(postgres).render_as_string(hide_password=False)
        == "postgresql+psycopg2://etl:p%40ss@db:5432/marketing"
    )
    psycopg3 = Connection(
        conn_id="w", conn_type="postgres", host="db", extra=json.dumps({"sqlalchemy_scheme": "postgresql+psycopg"})
    )
    assert warehouse.sqlalchemy_url(psycopg3).drivername == "postgresql+psycopg"


def rows(engine: Any, table: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(table))]


@needs_state_stores
@pytest.mark.slow  # an Airflow run or a CLI process: seconds
def test_campaign_pipeline_then_status_etl(
    panel: SandboxPanel,
    airflow_env: dict[str, str],
    warehouse: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    monkeypatch.setenv("AIRFLOW_CONN_MIRPANEL_WAREHOUSE", connection)
    env = {**airflow_env, **panel.env(), "AIRFLOW_CONN_MIRPANEL_WAREHOUSE": connection}
    engine = warehouse.get_engine()
    campaign = list(csv.DictReader((DAGS / "data" / "campaign.csv").open()))
    catalogue = panel.catalogue.by_id

    # 1. The campaign: every row placed once, recorded, waited for, final statuses loaded. The clock
    # stands still until the trigger (dags test runs it inline) has polled once, so the sensor's check on
    # the worker finds the orders Pending and defers, however long the tasks before it take.
    panel.speed = 0
    with once(lambda: panel.count("status") >= 2, lambda: panel.advance(3600)):
        result = dags_test(env, "mirpanel_campaign")
    assert "Deferring: the triggerer watches" in result.stdout
    # Orders are placed several at once, so their IDs follow no particular row order: match them by key.
    orders = {row["order_key"]: row for row in rows(engine, warehouse.orders)}
    assert panel.count("add") == len(campaign) == len(orders) == len(panel.state.orders)
    assert set(orders) == {wanted["key"] for wanted in campaign}
    assert {row["campaign"] for row in orders.values()} == {"spring_launch"}
    for wanted in campaign:
        row = orders[wanted["key"]]
        order = panel.state.orders[row["order_id"]]
        status, remains, charge, _ = order.read()
        assert (row["service"], row["link"], row["quantity"]) == (
            int(wanted["service"]),
            wanted["link"],
            int(wanted["quantity"]),
        )
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
    warehouse.record_placed(
        engine,
        "outside",
        [
            {
                "key": str(order_id),
                "state": "placed",
                "order": order_id,
                "service": 8094,
                "link": f"l/{order_id}",
                "quantity": 1000,
                "cost": 0.0076,
            }
            for order_id in open_ids
        ],
        [],
        "test",
    )
    assert warehouse.open_order_ids(engine) == open_ids
    interval = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    dags_test(env, "mirpanel_status_etl", interval.isoformat())

    history = rows(engine, warehouse.order_status_history)
    assert sorted(row["order_id"] for row in history) == open_ids  # only the open orders were asked about
    assert {(row["status"], row["remains"]) for row in history} == {("In progress", 400)}
    assert {warehouse.utc(row["snapshot_at"]) for row in history} == {interval}
    by_id = {row["order_id"]: row for row in rows(engine, warehouse.orders)}
    assert all(
        by_id[order_id]["status"] == "In progress" and by_id[order_id]["remains"] == 400 for order_id in open_ids
    )

    # 4. A re-run of the same interval replaces its snapshot: no new rows, the newer statuses.
    panel.set_order(open_ids[0], "Completed")
    dags_test(env, "mirpanel_status_etl", interval.isoformat())
    history = rows(engine, warehouse.order_status_history)
    assert len(history) == 3 and sorted(row["order_id"] for row in history) == open_ids
    assert {row["order_id"]: row["status"] for row in history}[open_ids[0]] == "Completed"
    assert {row["order_id"]: row["status"] for row in rows(engine, warehouse.orders)}[open_ids[0]] == "Completed"
    assert warehouse.open_order_ids(engine) == open_ids[1:]
    assert panel.api_key not in json.dumps(
        [rows(engine, table) for table in warehouse.metadata.tables.values()], default=str
    )
    engine.dispose()


@needs_state_stores
def test_manual_runs_without_a_logical_date(
    panel: SandboxPanel,
    airflow_env: dict[str, str],
    warehouse: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    monkeypatch.setenv("AIRFLOW_CONN_MIRPANEL_WAREHOUSE", connection)
    env = {**airflow_env, **panel.env(), "AIRFLOW_CONN_MIRPANEL_WAREHOUSE": connection}
    engine = warehouse.get_engine()
    refillable = next(
        service for service in panel.catalogue.services if service["refill"] and service["type"] == "Default"
    )
    open_ids = panel.create_orders(2, service=8094, quantity=1000, status="In progress", remains=400)
    done_ids = panel.create_orders(2, service=refillable["service"], status="Completed")
    warehouse.record_placed(
        engine,
        "earlier",
        [
            {
                "key": str(order_id),
                "state": "placed",
                "order": order_id,
                "service": panel.state.orders[order_id].service,
                "link": f"l/{order_id}",
                "quantity": panel.state.orders[order_id].quantity,
                "cost": 0.01,
            }
            for order_id in open_ids + done_ids
        ],
        [refillable],
        "test",
    )

    (alert, etl, refill), out = run_manually(
        env,
        DAGS,
        ("mirpanel_balance_alert", {"min_balance": 5000}),
        ("mirpanel_status_etl", {}),
        ("mirpanel_auto_refill", {}),
    )

    assert [(run["logical_date"], run["run_id"][:8]) for run in (alert, etl, refill)] == [(None, "manual__")] * 3
    # The balance is below the threshold: check_balance fails on purpose, and the alert is delivered.
    assert alert["state"] == "failed"
    assert (
        f"ALERT: MirPanel balance alert (mirpanel_balance_alert, run {alert['run_id']}): "
        "balance 1,000.00 USD is below the threshold 5,000.00 USD"
    ) in out
    assert "UndefinedError" not in out and "Failed to run task callback" not in out
    # Without a data interval, the ETL's snapshot and the refill requests are keyed by when the run was
    # triggered. The ETL finds the finished orders Completed, so the auto refill asks to refill them.
    assert etl["state"] == refill["state"] == "success"
    history = rows(engine, warehouse.order_status_history)
    assert sorted(row["order_id"] for row in history) == sorted(open_ids + done_ids)
    assert {warehouse.utc(row["snapshot_at"]) for row in history} == {warehouse.utc(etl["run_after"])}
    requested = rows(engine, warehouse.refills)
    assert sorted(row["order_id"] for row in requested) == sorted(done_ids)
    assert {warehouse.utc(row["requested_for"]) for row in requested} == {warehouse.utc(refill["run_after"])}
    assert all(row["refill_id"] and row["status"] for row in requested)
    engine.dispose()


def test_the_balance_watch_dag_watches_its_asset_with_a_balance_trigger(example_bag: Any) -> None:
    from airflow.sdk import Asset

    from airflow_provider_mirpanel.triggers.balance import BalanceTrigger

    dag = example_bag.dags["mirpanel_balance_watch"]
    [asset] = dag.timetable.asset_condition.objects  # schedule=[BALANCE_LOW]
    assert isinstance(asset, Asset) and asset.name == "mirpanel_balance_low"
    [watcher] = asset.watchers
    trigger = watcher.trigger
    assert watcher.name == "mirpanel_balance_watch" and isinstance(trigger, BalanceTrigger)
    classpath, kwargs = trigger.serialize()  # what the triggerer is handed
    assert classpath == "airflow_provider_mirpanel.triggers.balance.BalanceTrigger"
    assert {
        name: kwargs[name] for name in ("mirpanel_conn_id", "min_balance", "runs_out_within_hours", "poll_interval")
    } == {
        "mirpanel_conn_id": "mirpanel_default",
        "min_balance": 50.0,
        "runs_out_within_hours": 24.0,
        "poll_interval": 300.0,
    }
    assert list(dag.task_dict) == ["alert"] and asset in dag.task_dict["alert"].inlets


def test_the_balance_watch_alerts_on_the_minimum_only_when_its_hours_are_empty_or_zero(warehouse: ModuleType) -> None:
    import mirpanel_balance_watch  # the DAGs folder is on sys.path while the warehouse fixture is

    hours = [mirpanel_balance_watch.run_out_hours(value) for value in ("", " ", "0", "0.0", "24", "1.5")]
    assert hours == [None, None, None, None, 24.0, 1.5]
