"""The assets of ``python -m benchmarks --deployment``'s MirPanel page case (never run).

Parsing this DAG makes Airflow create the assets the page reads — the ``mirpanel_default`` connection's
ledger asset (``ledger_scope``) and balance asset (``BalanceCheckOperator``), and two campaign event assets —
which ``benchmarks/page.py`` then fills through Airflow's REST API.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset

from airflow_provider_mirpanel.operators.mirpanel import BalanceCheckOperator, PlaceOrderOperator

#: Where the benchmark's campaign events go.
PLACED, FINISHED = Asset("mirpanel_bench_campaign_placed"), Asset("mirpanel_bench_campaign_finished")

with DAG(
    "mirpanel_bench_page", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["mirpanel", "benchmark"]
):
    BalanceCheckOperator(task_id="balance") >> PlaceOrderOperator(
        task_id="place", orders=[], ledger_scope="bench", outlets=[PLACED, FINISHED]
    )
