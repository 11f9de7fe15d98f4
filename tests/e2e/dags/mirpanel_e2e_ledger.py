"""DAGs of the concurrency scenarios of ``make e2e`` (issue 20): writers of one ledger scope at once.

Loaded by the e2e deployment as a second DAG bundle (``e2e``, this folder; ``deployment.py``),
beside the example DAGs. Each run's conf names the ledger scope (``scope``) and a campaign file
(``campaign_csv``: ``key,service,link,quantity``, written by the scenario); the rows carry keys.

* ``mirpanel_e2e_place`` and ``mirpanel_e2e_place_twin``: read the rows, place them into the scope.
  No ``max_active_runs``: two runs of one DAG, or runs of the two DAGs, place at once. One retry.
* ``mirpanel_e2e_place_mapped``: the rows in ``chunks`` chunks, one mapped task instance each
  (``PlaceOrderOperator.partial(ledger_scope=...).expand(orders=...)``), all into the scope. One
  retry, as placing DAGs have (the example campaign has three).
* ``mirpanel_e2e_place_killable``: no retries and a 20 s lease, for the scenario that kills a
  holder with ``kill -9`` (a retry would take the lease back at once; the waiter must outlive it).
* ``mirpanel_e2e_place_spread`` (the CeleryExecutor line, issue 23): like the mapped one, but every
  chunk first waits at the run's **start gate** (before it claims the scope), so the scenario sees
  as many chunks running at once as the Celery workers have slots — on both workers — before any
  of them places.

The **gate** (test scaffolding, not the provider): with ``gate`` in the conf (a file path), the
placement's first ``add`` — from try ``gate_from_try`` on — writes ``<gate>.<run id>.reached`` and
waits until the scenario creates the file ``gate``. The holder of the scope is then certainly
placing while the scenario watches the other writers wait (the lease in the state store, their
task instances deferred): the overlap is made, not hoped for.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator

#: Seconds between a waiting writer's looks at the scope (the operator's default is 5). Not shorter:
#: Airflow 3.3.2's scheduler fails a deferred task whose trigger fires before it has processed the
#: executor's "success" of the process that deferred (the task is already queued again:
#: apache/airflow#67287, fixed after 3.3.2 by #68741); under load that took 2.8 s here.
POLL = 10
#: Seconds a killed holder's lease lives on (the operator's default is 60).
SHORT_LEASE = 20
#: The longest a gated placement waits for its gate before it goes on anyway.
GATE_TIMEOUT = 600

PARAMS = {
    "scope": Param("e2e", type="string", minLength=1, maxLength=200, description="The ledger scope"),
    "campaign_csv": Param("", type="string", description="Absolute path of the rows: key,service,link,quantity"),
    "gate": Param("", type="string", description="A file the first add waits for ('' for none)"),
    "gate_from_try": Param(1, type="integer", minimum=1, description="The first try the gate holds"),
    "chunks": Param(6, type="integer", minimum=1, description="Mapped placement: chunks of the rows"),
}


def read_rows(path: str) -> list[dict[str, Any]]:
    with Path(path).open(newline="") as file:
        return [
            {**row, "service": int(row["service"]), "quantity": int(row["quantity"])} for row in csv.DictReader(file)
        ]


def gated(add_order: Callable[..., Any], gate: Path, who: str, log: Any) -> Callable[..., Any]:
    """``add_order`` whose first call (of any thread) waits until the file ``gate`` exists."""
    lock, opened = threading.Lock(), threading.Event()

    def add(service: Any, **params: Any) -> Any:
        if not opened.is_set():
            with lock:
                if not opened.is_set():
                    gate.with_name(f"{gate.name}.{who}.reached").write_text(who)
                    log.info("e2e gate: %s waits for %s before its first add", who, gate)
                    deadline = time.monotonic() + GATE_TIMEOUT
                    while not gate.exists() and time.monotonic() < deadline:
                        time.sleep(0.2)
                    log.info("e2e gate %s: %s", "opened" if gate.exists() else "timed out", gate)
                    opened.set()
        return add_order(service, **params)

    return add


class GatedPlaceOrderOperator(PlaceOrderOperator):
    """PlaceOrderOperator whose hook's first ``add`` waits at the run's gate (see the module's docs).

    ``gate_who`` (templated) names the try at the gate: ``<run id>.try<n>``.
    """

    template_fields = (*PlaceOrderOperator.template_fields, "gate", "gate_from_try", "gate_who")

    def __init__(
        self,
        *,
        gate: str = "",
        gate_from_try: Any = 1,
        gate_who: str = "{{ run_id }}.try{{ ti.try_number }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.gate_from_try = gate_from_try
        self.gate_who = gate_who

    @cached_property
    def hook(self) -> MirPanelHook:
        hook = MirPanelHook(mirpanel_conn_id=self.mirpanel_conn_id)
        rendered = "{{" not in self.gate + self.gate_who
        if rendered and self.gate and int(self.gate_who.rsplit(".try", 1)[1]) >= int(self.gate_from_try):
            setattr(hook, "add_order", gated(hook.add_order, Path(self.gate), self.gate_who, self.log))  # noqa: B010
        return hook


@task
def rows(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's rows."""
    return read_rows(params["campaign_csv"])


@task
def chunks(params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The run's rows in ``chunks`` chunks."""
    rows = read_rows(params["campaign_csv"])
    size = math.ceil(len(rows) / params["chunks"])
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def place_dag(dag_id: str, description: str, **place: Any) -> DAG:
    """Rows → one placement into the run's scope, with a gate (and, unless ``place`` says otherwise, one retry)."""
    with DAG(
        dag_id=dag_id, description=description, schedule=None, catchup=False, tags=["mirpanel", "e2e"], params=PARAMS
    ) as dag:
        GatedPlaceOrderOperator(
            task_id="place_orders",
            orders=rows(),  # type: ignore[call-arg]
            ledger_scope="{{ params.scope }}",
            ledger_wait_poll=POLL,
            gate="{{ params.gate }}",
            gate_from_try="{{ params.gate_from_try }}",
            **{"retries": 1, "retry_delay": timedelta(seconds=2), **place},
        )
    return dag


place_dag("mirpanel_e2e_place", "Place rows into a ledger scope; runs may overlap")
place_dag("mirpanel_e2e_place_twin", "A second DAG placing into the same ledger scopes")
place_dag(
    "mirpanel_e2e_place_killable",
    "Placement into a scope whose holder may be killed",
    retries=0,
    ledger_lease=SHORT_LEASE,
)


class StartGatedPlaceOrderOperator(PlaceOrderOperator):
    """PlaceOrderOperator that waits for the file ``gate`` before it starts (test scaffolding).

    It writes ``<gate>.<run id>.<map index>.reached`` first. A resumed task (after deferring for the
    scope) does not pass here again.
    """

    template_fields = (*PlaceOrderOperator.template_fields, "gate")

    def __init__(self, *, gate: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    def execute(self, context: Any) -> Any:
        if self.gate:
            gate = Path(self.gate)
            who = f"{context['run_id']}.{context['ti'].map_index}"
            gate.with_name(f"{gate.name}.{who}.reached").write_text(who)
            deadline = time.monotonic() + GATE_TIMEOUT
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.log.info("e2e start gate %s: %s", "opened" if gate.exists() else "timed out", gate)
        return super().execute(context)


with DAG(
    dag_id="mirpanel_e2e_place_spread",
    description="Mapped placement of chunks into one ledger scope, every chunk started before any places",
    schedule=None,
    catchup=False,
    tags=["mirpanel", "e2e"],
    params=PARAMS,
):
    StartGatedPlaceOrderOperator.partial(
        task_id="place_orders",
        ledger_scope="{{ params.scope }}",
        ledger_wait_poll=POLL,
        gate="{{ params.gate }}",
    ).expand(orders=chunks())  # type: ignore[call-arg]

with DAG(
    dag_id="mirpanel_e2e_place_mapped",
    description="Mapped placement of chunks into one ledger scope",
    schedule=None,
    catchup=False,
    tags=["mirpanel", "e2e"],
    params=PARAMS,
):
    PlaceOrderOperator.partial(
        task_id="place_orders",
        ledger_scope="{{ params.scope }}",
        ledger_wait_poll=POLL,
        retries=1,
        retry_delay=timedelta(seconds=2),
    ).expand(orders=chunks())  # type: ignore[call-arg]
