"""Campaign order pipeline: a campaign file in, paid orders placed exactly once, final statuses in a table.

::

    read_campaign ─┬─ services ─┬─ check_budget ── place_orders ── record_placed ── should_wait
                   └─ balance ──┘                                                      │
                     summarize ── load_final_statuses ── wait_for_orders ───────────────┘

1. ``read_campaign`` reads the campaign's orders from a CSV file (``key,service,link,quantity``;
   the ``campaign_csv`` param, relative to this folder or absolute). Rows of this campaign already
   in the ``orders`` table are dropped: triggering the same campaign twice buys nothing twice.
2. ``services`` (the catalogue rows of the campaign's services) and ``balance`` feed
   ``check_budget``, which fails the run before anything is spent if the estimated cost exceeds
   the balance or the ``max_spend`` param.
3. ``place_orders`` places every order exactly once per campaign: each row's ``key`` is recorded in
   the ledger scope named after the campaign (an asset state store that outlives DAG runs) before
   it is sent, so neither a retry nor a later run of the same campaign sends a paid order twice.
   An order whose outcome is unknown (a lost reply, a killed try) is never resent: the run fails
   without retries and names it; look it up on the panel, then resolve it with
   ``mirpanel_resolve_orders`` (or trigger again with ``{"on_unknown": "skip"}``).
4. ``record_placed`` writes the accepted orders to ``orders`` right away (what was paid for is
   recorded even if a later task fails). If ``place_orders`` fails, its failure callback records
   the orders it did place.
5. ``wait_for_orders`` waits, deferred to the triggerer, until every order is Completed, Partial,
   Canceled or Refunded (set ``wait_for_completion`` to false for long campaigns: the hourly
   ``mirpanel_status_etl`` keeps the table up to date instead).
6. ``load_final_statuses`` stores the final statuses; ``summarize`` logs the outcome and the spend.

Data-aware: ``place_orders`` and ``wait_for_orders`` give the assets ``mirpanel_campaign_placed`` and
``mirpanel_campaign_finished`` an event each, whose ``extra`` summarises the campaign (counts,
spend, statuses); ``mirpanel_campaign_report`` is scheduled on the second.

Trigger it with a campaign of your own::

    airflow dags trigger mirpanel_campaign -c '{"campaign": "black_friday", "campaign_csv": "/data/bf.csv"}'

Triggering the same campaign again — after a success, a failure, a kill or a lost reply — places
only the rows no earlier run placed and never a row twice (the ``campaign`` param names the scope).

Connections: ``mirpanel_default`` (the panel) and ``mirpanel_warehouse`` (the database, see
``mirpanel_warehouse.py``).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import DAG, Param, task
from mirpanel_examples import warehouse
from mirpanel_examples.campaign_assets import CAMPAIGN_FINISHED, CAMPAIGN_PLACED

from airflow_provider_mirpanel.assets.events import CampaignAssetEvent
from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.operators.mirpanel import BalanceCheckOperator, PlaceOrderOperator, ServicesOperator
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: Columns every campaign file needs; the others (link, quantity, the type's parameters) depend on
#: the service's type and are checked by PlaceOrderOperator against the catalogue.
REQUIRED_COLUMNS = ("key", "service")


def campaign_file(path: str) -> Path:
    """The campaign file: an absolute path, or one relative to this DAG's folder."""
    file = Path(path).expanduser()
    return file if file.is_absolute() else HERE / file


def record_paid_orders(context: Any) -> None:
    """``place_orders``' failure callback: record the orders that *were* placed before the task failed.

    ``PlaceOrderOperator`` fails when some orders were refused (e.g. not enough funds); its exception
    carries the records of the try, and the placed ones are paid for: they belong in ``orders``.
    """
    records = getattr(context.get("exception"), "records", None)
    if not records:
        return
    services = context["ti"].xcom_pull(task_ids="services") or []
    added = warehouse.record_placed(
        warehouse.get_engine(), context["params"]["campaign"], records, services, context["run_id"]
    )
    log.warning("place_orders failed; %d orders it placed were recorded in the orders table", added)


with DAG(
    dag_id="mirpanel_campaign",
    description="Place a campaign's orders exactly once, wait for them, load the final statuses",
    schedule=None,  # one run per campaign: trigger it from the UI, the CLI or the REST API
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # good practice; two runs at once would take turns on the scope's lease, never buy twice
    tags=["mirpanel", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "campaign": Param(
            "spring_launch",
            type="string",
            minLength=1,
            maxLength=200,
            description="The campaign's name: rows of the orders table are tagged with it",
        ),
        "campaign_csv": Param(
            "data/campaign.csv",
            type="string",
            description="CSV file with key,service,link,quantity columns (plus any other "
            "parameter of the service's type); relative to the DAGs folder "
            "or absolute",
        ),
        "max_spend": Param(
            50.0,
            type="number",
            minimum=0,
            description="Refuse the campaign when its estimated cost exceeds this amount",
        ),
        "on_unknown": Param(
            "fail",
            enum=["fail", "skip", "resend"],
            description="Orders whose outcome an earlier try or run left unknown: fail (and name "
            "them), skip them, or resend them (may pay twice). Prefer resolving "
            "them with mirpanel_resolve_orders",
        ),
        "wait_for_completion": Param(
            True, type="boolean", description="Wait for every order to finish; false leaves that to mirpanel_status_etl"
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def read_campaign(params: dict[str, Any]) -> list[dict[str, Any]]:
        """The campaign's order rows not placed yet: ``key, service, link, quantity`` (+ type parameters)."""
        path = campaign_file(params["campaign_csv"])
        with path.open(newline="", encoding="utf-8-sig") as file:
            rows = [
                {name.strip(): (value or "").strip() for name, value in row.items() if name}
                for row in csv.DictReader(file)
            ]
        missing = [column for column in REQUIRED_COLUMNS if rows and column not in rows[0]]
        if not rows or missing:
            raise AirflowFailException(f"{path}: no orders" if not rows else f"{path}: missing columns {missing}")
        orders = [
            {
                name: int(value) if name in ("service", "quantity") else value
                for name, value in row.items()
                if value != ""
            }
            for row in rows
        ]
        done = warehouse.placed_keys(warehouse.get_engine(), params["campaign"])
        todo = [order for order in orders if order["key"] not in done]
        log.info(
            "campaign %r: %d orders in %s, %d already placed by an earlier run, %d to place",
            params["campaign"],
            len(orders),
            path.name,
            len(orders) - len(todo),
            len(todo),
        )
        if not todo:
            raise AirflowSkipException("every order of this campaign was placed by an earlier run")
        return todo

    orders = read_campaign()

    # Only the campaign's services: the whole catalogue has thousands of rows. A template pulling
    # an XCom adds no dependency by itself: hence "orders >> services".
    services = ServicesOperator(
        task_id="services",
        service_ids="{{ ti.xcom_pull(task_ids='read_campaign') | map(attribute='service') | list }}",
    )
    orders >> services
    balance = BalanceCheckOperator(task_id="balance")  # no threshold: just read it for check_budget

    @task
    def check_budget(
        orders: list[dict[str, Any]], catalogue: list[dict[str, Any]], balance: dict[str, Any], params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Fail before spending anything unless the balance and ``max_spend`` cover the estimated cost."""
        rates = {service["service"]: service["rate"] for service in catalogue}
        unknown = sorted({order["service"] for order in orders} - rates.keys())
        if unknown:
            raise AirflowFailException(f"services {unknown} are not in the panel's catalogue (unknown or disabled)")
        # rate is per 1000 units; a package (no quantity) costs its rate
        cost = sum(
            (rates[order["service"]] or 0) * (order["quantity"] / 1000 if "quantity" in order else 1)
            for order in orders
        )
        currency = balance["currency"] or ""
        log.info(
            "campaign %r: %d orders, estimated cost %.4f %s; balance %.2f %s; max_spend %.2f",
            params["campaign"],
            len(orders),
            cost,
            currency,
            balance["balance"],
            currency,
            params["max_spend"],
        )
        if cost > balance["balance"]:
            raise AirflowFailException(
                f"the estimated cost {cost:.2f} {currency} exceeds the balance "
                f"{balance['balance']:.2f} {currency}: top up the panel account"
            )
        if cost > params["max_spend"]:
            raise AirflowFailException(
                f"the estimated cost {cost:.2f} {currency} exceeds max_spend {params['max_spend']:.2f}"
            )
        return orders

    checked = check_budget(orders, services.output, balance.output)

    # Exactly once per campaign: each row's key goes to the campaign's ledger scope (it outlives DAG
    # runs) before the order is sent, so neither the retries below nor a re-triggered run place an
    # order twice. check_balance re-checks right before spending.
    place = PlaceOrderOperator(
        task_id="place_orders",
        orders=checked,
        check_balance=True,
        ledger_scope="{{ params.campaign }}",
        on_unknown="{{ params.on_unknown }}",
        services=services.output,  # the catalogue rows read above: no second services request
        retries=3,
        on_failure_callback=record_paid_orders,
        # An asset event when the orders are placed, its extra summarising them (counts, spend, states)
        outlets=[CAMPAIGN_PLACED],
        post_execute=CampaignAssetEvent("placed", campaign="{{ params.campaign }}"),
    )

    @task
    def record_placed(
        placed: list[dict[str, Any]], catalogue: list[dict[str, Any]], params: dict[str, Any], run_id: str
    ) -> list[int]:
        """Write the accepted orders to the orders table now; return their IDs."""
        added = warehouse.record_placed(warehouse.get_engine(), params["campaign"], placed, catalogue, run_id)
        ids = [record["order"] for record in placed if record["state"] == "placed"]
        log.info("recorded %d new orders in the orders table: %s", added, ids)
        return ids

    order_ids = record_placed(place.output, services.output)

    @task.short_circuit
    def should_wait(order_ids: list[int], params: dict[str, Any]) -> bool:
        """Skip the wait when ``wait_for_completion`` is off (mirpanel_status_etl follows the orders)."""
        if not params["wait_for_completion"]:
            log.info("not waiting: mirpanel_status_etl will follow these %d orders", len(order_ids))
        return bool(order_ids) and params["wait_for_completion"]

    # Deferrable: one check on the worker, then the triggerer polls (only the unfinished orders)
    # without holding a worker slot. It needs a running triggerer (`airflow triggerer`; standalone
    # runs one); without one, set deferrable=False and reschedule mode frees the slot between checks.
    wait = OrderStatusSensor(
        task_id="wait_for_orders",
        order_ids=order_ids,
        deferrable=True,
        mode="reschedule",
        poke_interval=warehouse.POKE_INTERVAL,
        timeout=timedelta(days=3),  # real orders take minutes to days
        # An asset event when every order has ended (counts per status, spend, remains):
        # mirpanel_campaign_report runs on it
        outlets=[CAMPAIGN_FINISHED],
        post_execute=CampaignAssetEvent("finished", campaign="{{ params.campaign }}"),
    )

    @task
    def load_final_statuses(statuses: list[dict[str, Any]]) -> None:
        """Store every order's final status in the orders table."""
        updated = warehouse.update_statuses(warehouse.get_engine(), statuses)
        log.info(
            "final statuses of %d orders loaded: %s", updated, dict(Counter(record["status"] for record in statuses))
        )

    @task
    def summarize(balance_before: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Log the campaign's outcome: orders, how they ended, what they cost, the balance before and after."""
        rows = warehouse.campaign_orders(warehouse.get_engine(), params["campaign"])
        statuses = Counter(row["status"] for row in rows)
        spend = sum(row["charge"] or 0 for row in rows)
        estimate = sum(row["estimated_cost"] or 0 for row in rows)
        after = MirPanelHook().get_balance()
        summary = {
            "campaign": params["campaign"],
            "orders": len(rows),
            "completed": statuses.get("Completed", 0),
            "partial": statuses.get("Partial", 0),
            "canceled": statuses.get("Canceled", 0) + statuses.get("Refunded", 0),
            "spend": round(spend, 6),
            "estimated": round(estimate, 6),
            "currency": after["currency"],
            "balance_before": balance_before["balance"],
            "balance_after": after["balance"],
        }
        log.info(
            "campaign %(campaign)r: %(orders)d orders, %(completed)d completed, %(partial)d partial, "
            "%(canceled)d canceled; spend %(spend).4f %(currency)s (estimated %(estimated).4f); "
            "balance %(balance_before).4f -> %(balance_after).4f %(currency)s",
            summary,
        )
        return summary

    should_wait(order_ids) >> wait
    load_final_statuses(wait.output) >> summarize(balance.output)
