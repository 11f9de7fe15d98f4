"""A real retry of a placement on the Airflow line under test: no order is ever placed twice.

``airflow dags test`` runs ``tests/dags/mirpanel_retry_dag.py``: three orders, ``retries=1``. On the
first try one is placed, one is refused by the panel (an "active order" error: nothing was
created) and one's reply is lost after the panel created it (its outcome unknown). Airflow
retries. What the retry may do depends on the line (README, "Airflow lines"):

- 3.3 (``task_state_store``): the placed order comes back from the ledger without a request, the
  refused one is placed, the lost one is not resent;
- 3.1 and 3.2 (no state store): the retry cannot see what the first try did, so it sends nothing
  and fails without further retries, naming every order as of unknown outcome.

Either way each link ends with exactly one order on the panel. This test is in the quick suite, so
``.ci/run`` runs it on every line of the matrix.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from support.airflow_cli import AIRFLOW, airflow_home
from support.airflow_compat import STATE_STORES

from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.utils.airflow_lines import airflow_line

DAGS = Path(__file__).resolve().parents[1] / "dags"
ACTIVE_ORDER = "You have active order with this link. Please wait until order being completed."


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return airflow_home(tmp_path_factory.mktemp("airflow-home"), DAGS)


def test_a_retry_places_no_order_twice(panel: SandboxPanel, airflow_env: dict[str, str]) -> None:
    service = next(s for s in panel.catalogue.services if s["type"] == "Default")
    orders = [
        {
            "key": f"row-{i}",
            "service": service["service"],
            "link": f"https://example.com/retry/{i}",
            "quantity": service["min"],
        }
        for i in range(3)
    ]
    panel.faults.add("add", "error", error=ACTIVE_ORDER, when=lambda form: form["link"].endswith("/1"), times=1)
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"].endswith("/2"), times=1)

    env = {**airflow_env, **panel.env(), "MIRPANEL_TEST_ORDERS": json.dumps(orders)}
    result = subprocess.run(
        [AIRFLOW, "dags", "test", "mirpanel_retry_test"], env=env, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    logs = output + "".join(
        path.read_text(errors="replace") for path in Path(airflow_env["AIRFLOW_HOME"]).rglob("*.log")
    )

    sent = Counter(entry.form["link"].rsplit("/", 1)[1] for entry in panel.requests if entry.action == "add")
    held = Counter((order.link or "").rsplit("/", 1)[1] for order in panel.state.orders.values())
    assert max(held.values()) == 1, (airflow_line(), held)  # the promise: nothing bought twice
    if STATE_STORES:
        assert sent == {"0": 1, "1": 2, "2": 1}, (sent, output[-4000:])  # the retry re-sent only the refused one
        assert held == {"0": 1, "1": 1, "2": 1}
        assert "row-2 unknown" in logs  # the lost reply: named, not resent
    else:
        assert sent == {"0": 1, "1": 1, "2": 1}, (sent, output[-4000:])  # the retry sent nothing
        assert held == {"0": 1, "2": 1}
        assert "every order counts as possibly placed" in logs, output[-4000:]  # it was the retry that held back
    assert "A retry cannot change this" in logs, output[-4000:]  # it failed without a third try
    assert panel.api_key not in logs
