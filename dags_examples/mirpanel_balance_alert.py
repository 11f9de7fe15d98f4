"""Balance alert, every 30 minutes: fail and notify when the panel balance drops below a threshold.

``BalanceCheckOperator`` reads the balance; below ``min_balance`` (a param) it fails the task without
retries, and the task's ``on_failure_callback`` notifiers deliver the alert. By default the alert
goes to the task log (:class:`LogAlertNotifier`); to reach people, add a Slack or e-mail notifier
to ``ALERT_NOTIFIERS`` below. A successful run is the "balance OK" signal (its XCom holds the
balance record), so a dashboard of this DAG's runs is a balance history.

Connection: ``mirpanel_default`` (the panel).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, BaseNotifier, Param

from airflow_provider_mirpanel.operators.mirpanel import BalanceCheckOperator

log = logging.getLogger(__name__)

#: The alert's text (Jinja, rendered with the failed task's context; ``exception`` says why, e.g.
#: "balance 12.50 USD is below the threshold 50.00 USD"). It names the run by ``run_id``: a manual run
#: (UI, ``airflow dags trigger``, REST API) has no logical date, so ``ts``, ``ds`` or ``logical_date``
#: would be undefined and the alert would never be sent.
ALERT_TEXT = "MirPanel balance alert ({{ dag.dag_id }}, run {{ run_id }}): {{ exception }}"


class LogAlertNotifier(BaseNotifier):
    """Write an alert to the task log at ERROR level: the default delivery, and a template for your own.

    :param text: the alert (templated with the task's context).
    """

    template_fields = ("text",)

    def __init__(self, text: str = ALERT_TEXT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = text

    def notify(self, context: Any) -> None:
        log.error("ALERT: %s", self.text)


ALERT_NOTIFIERS: list[BaseNotifier] = [
    LogAlertNotifier(),
    # E-mail (the smtp provider is installed with this project; set up the "smtp_default" connection):
    #
    #   from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    #   SmtpNotifier(to="finance@example.com", subject="MirPanel balance low", html_content=ALERT_TEXT),
    #
    # Slack (pip install apache-airflow-providers-slack; a "slack_api_default" connection with a bot token):
    #
    #   from airflow.providers.slack.notifications.slack import SlackNotifier
    #   SlackNotifier(slack_conn_id="slack_api_default", channel="#marketing-ops", text=ALERT_TEXT),
]

with DAG(
    dag_id="mirpanel_balance_alert",
    description="Alert when the panel balance is below a threshold",
    schedule="*/30 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,  # an alert about the balance an hour ago is no use
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    tags=["mirpanel", "example", "alert"],
    params={
        "min_balance": Param(
            50.0, type="number", minimum=0, description="Alert when the balance (in the panel's currency) is below this"
        ),
    },
    doc_md=__doc__,
) as dag:
    BalanceCheckOperator(
        task_id="check_balance",
        min_balance="{{ params.min_balance }}",
        on_low="fail",  # fails without retries; "warn" logs instead, "skip" skips the task
        retries=2,  # only for a panel that cannot be reached; a low balance is never retried
        retry_delay=timedelta(minutes=1),
        on_failure_callback=ALERT_NOTIFIERS,
    )
