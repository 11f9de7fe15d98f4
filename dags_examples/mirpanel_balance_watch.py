"""Event-driven balance alert: the triggerer watches the balance; a run happens only when it turns low.

An ``AssetWatcher`` runs :class:`~airflow_provider_mirpanel.triggers.balance.BalanceTrigger` in the
triggerer. It polls the balance every few minutes and gives the asset ``mirpanel_balance_low`` an
event only when the balance crosses below ``min_balance`` or, at the spend rate of the last 24 h,
would run out within ``runs_out_within_hours`` — once per crossing, again after it recovered and
dropped again, and not again after a triggerer restart. This DAG is scheduled on that asset: while
the balance is fine, no DAG run happens at all. Its one task delivers the alert (the trigger's
message states balance, threshold, spend rate and when it runs out) to the task log; add a Slack or
e-mail notifier to ``ALERT_NOTIFIERS`` in ``mirpanel_balance_alert.py`` to reach people.

Compare ``mirpanel_balance_alert``: a run every 30 minutes on a worker, failing while the balance is
low. This one costs a triggerer coroutine and no worker slot until there is something to say.

The thresholds are the trigger's arguments, fixed when the DAG file is parsed: edit them below (or
set ``MIRPANEL_BALANCE_MIN`` / ``MIRPANEL_BALANCE_HOURS`` / ``MIRPANEL_BALANCE_POLL`` for the
dag-processor; ``MIRPANEL_BALANCE_HOURS`` empty or 0 alerts on the minimum only). Connection:
``mirpanel_default`` (read by the triggerer).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_mirpanel.assets.events import run_events
from airflow_provider_mirpanel.triggers.balance import BalanceTrigger

log = logging.getLogger(__name__)


def run_out_hours(value: str) -> float | None:
    """``MIRPANEL_BALANCE_HOURS``: hours, or None (no run-out alert) when empty or 0."""
    return float(value) if value.strip() and float(value) else None


BALANCE_LOW = Asset(
    "mirpanel_balance_low",
    watchers=[
        AssetWatcher(
            name="mirpanel_balance_watch",
            trigger=BalanceTrigger(
                mirpanel_conn_id="mirpanel_default",
                min_balance=float(os.environ.get("MIRPANEL_BALANCE_MIN", "50")),
                runs_out_within_hours=run_out_hours(os.environ.get("MIRPANEL_BALANCE_HOURS", "24")),
                poll_interval=float(os.environ.get("MIRPANEL_BALANCE_POLL", "300")),
            ),
        )
    ],
)


def balance_events(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The trigger payloads of this run's asset events (a run by hand: of the asset's latest event)."""
    return [event.extra.get("payload", {}) for event in run_events(context, BALANCE_LOW)]


with DAG(
    dag_id="mirpanel_balance_watch",
    description="Alert once when the panel balance turns low (event-driven: AssetWatcher + BalanceTrigger)",
    schedule=[BALANCE_LOW],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["mirpanel", "example", "alert"],
    doc_md=__doc__,
) as dag:

    @task(inlets=[BALANCE_LOW])
    def alert(**context: Any) -> list[str]:
        """Deliver one alert line per event: the trigger's message says everything."""
        messages = [str(payload.get("message", payload)) for payload in balance_events(context)]
        for message in messages:
            log.error("ALERT: MirPanel balance: %s", message)
        if not messages:
            log.warning("no balance event to report")
        return messages

    alert()
