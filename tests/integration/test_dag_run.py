"""A real Airflow run: ``airflow dags test`` of tests/dags/mirpanel_provider_dag.py against the sandbox.

The run happens in a subprocess with its own AIRFLOW_HOME and SQLite metadata DB (migrated once
per session), so the task runner, XCom serialization, template rendering, retries with a real
``task_state_store`` and reschedule-mode sensors are Airflow's own.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.airflow_cli import airflow_home, run_airflow
from support.airflow_compat import needs_state_stores
from support.steering import once

from airflow_provider_mirpanel.sandbox import Lifecycle, SandboxPanel

DAGS = Path(__file__).resolve().parents[1] / "dags"
DAG_ID = "mirpanel_provider_test"
ACTIVE_ORDER = "You have active order with this link. Please wait until order being completed."


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of an Airflow with a fresh, migrated SQLite DB and tests/dags as its DAGs folder."""
    return airflow_home(tmp_path_factory.mktemp("airflow-home"), DAGS)


def run_dag(env: Mapping[str, str], output: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = run_airflow({**env, "MIRPANEL_TEST_OUTPUT": str(output)}, "dags", "test", DAG_ID, timeout=900)
    assert output.exists(), (result.stdout[-5000:], result.stderr[-5000:])
    return result, json.loads(output.read_text())


@pytest.fixture
def slow_panel() -> Iterator[SandboxPanel]:
    """A panel whose clock stands still until the test starts it: orders stay Pending until then.

    Then orders end at once and refills within 0.6 s, on real time.
    """
    lifecycle = Lifecycle(
        pending_seconds=2.0, units_per_second=10_000.0, refill_pending_seconds=0.3, refill_run_seconds=0.3
    )
    with SandboxPanel(speed=0, lifecycle=lifecycle) as panel:
        yield panel


def start_clock(panel: SandboxPanel) -> None:
    panel.advance(2.0)  # the orders' pending time
    panel.speed = 1.0


@needs_state_stores  # its retry must place the refused order: below 3.3 it sends nothing (test_retry_lines.py)
@pytest.mark.slow  # an Airflow run or a CLI process: seconds
def test_every_operator_and_sensor_in_a_real_dag_run(
    slow_panel: SandboxPanel, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    panel = slow_panel
    # The first try of "place" gets one order refused; its retry must place only that one.
    panel.faults.add("add", "error", error=ACTIVE_ORDER, when=lambda form: form["link"].endswith("/1"), times=1)

    # The reschedule-mode sensor must wait: the orders end only after its second poke.
    with once(lambda: panel.count("status") >= 2, lambda: start_clock(panel)):
        result, out = run_dag({**airflow_env, **panel.env()}, tmp_path / "xcom.json")

    adds = Counter(entry.form["link"] for entry in panel.requests if entry.action == "add")
    assert adds == {"https://example.com/dag/0": 1, "https://example.com/dag/1": 2, "https://example.com/dag/2": 1}
    assert Counter(order.link for order in panel.state.orders.values()) == {
        f"https://example.com/dag/{i}": 1 for i in range(3)
    }

    placed = out["place"]["value"]
    assert [r["state"] for r in placed] == ["placed"] * 3
    assert sorted(r["order"] for r in placed) == sorted(panel.state.orders)
    order_ids = [r["order"] for r in placed]

    assert out["balance"]["value"]["currency"] == "USD" and out["balance"]["dtypes"]["balance"] == "Float64"
    assert out["services"]["value"] and all(r["type"] == "Default" for r in out["services"]["value"])
    status_polls = [entry for entry in panel.requests if entry.action == "status"]
    assert len(status_polls) >= 3  # the reschedule-mode sensor poked more than once, then "status" ran
    waited = out["wait_orders"]["value"]
    assert [r["order"] for r in waited] == order_ids and {r["status"] for r in waited} <= {"Completed", "Partial"}
    assert [r["order"] for r in out["status"]["value"]] == order_ids
    assert out["status"]["dtypes"]["checked_at"] == "datetime64[ns, UTC]"
    refills = [r["refill"] for r in out["refill"]["value"]]
    assert all(refills) and [r["refill"] for r in out["wait_refills"]["value"]] == refills
    assert {r["cancel"] for r in out["cancel"]["value"]} == {False}  # finished orders cannot be canceled
    assert out["place"]["dtypes"]["order"] == "Int64" and out["cancel"]["dtypes"]["cancel"] == "boolean"

    logs = "".join(path.read_text(errors="replace") for path in Path(airflow_env["AIRFLOW_HOME"]).rglob("*.log"))
    assert all(panel.api_key not in text for text in (result.stdout, result.stderr, logs, json.dumps(out)))
