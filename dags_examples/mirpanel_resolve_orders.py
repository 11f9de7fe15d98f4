"""Resolve a campaign's orders of unknown outcome: list them, then record what the panel holds.

An order's outcome is unknown when its ``add`` may have reached the panel but no order ID came back
(a lost reply, a killed ``place_orders``). ``mirpanel_campaign`` never resends such an order: its run
fails, without retries, naming the rows and their links. Then:

1. List them (also shown in this run's log and XCom)::

       airflow dags trigger mirpanel_resolve_orders -c '{"campaign": "black_friday"}'

2. Look each one up in the panel's order list (by its link), and record what you found — the order
   ID it holds, or ``"not_placed"`` when the panel has no such order::

       airflow dags trigger mirpanel_resolve_orders \\
           -c '{"campaign": "black_friday", "resolutions": {"row-17": 123456, "row-18": "not_placed"}}'

   Order IDs are checked with the panel first; an ID it does not know writes nothing.
3. Trigger ``mirpanel_campaign`` for the campaign again: it records ``row-17`` as order 123456
   without buying it, and places ``row-18``.

Connection: ``mirpanel_default`` (the panel).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_mirpanel.operators.mirpanel import ResolveOrdersOperator

with DAG(
    dag_id="mirpanel_resolve_orders",
    description="List and resolve a campaign's orders of unknown outcome",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["mirpanel", "example"],
    params={
        "campaign": Param(
            "spring_launch",
            type="string",
            minLength=1,
            maxLength=200,
            description="The campaign (the ledger scope of mirpanel_campaign)",
        ),
        "resolutions": Param(
            {},
            type="object",
            description='What the panel holds: {"row-key": order_id, "other-key": "not_placed"}; empty to list only',
        ),
    },
    doc_md=__doc__,
) as dag:
    ResolveOrdersOperator(
        task_id="resolve",
        ledger_scope="{{ params.campaign }}",
        resolutions="{{ params.resolutions }}",
    )
