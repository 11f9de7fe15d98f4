"""Run the ``airflow`` command of this virtualenv against a throwaway Airflow home.

The DAG-run tests use real ``airflow dags test`` runs in a subprocess: the task runner, XCom
serialization, template rendering, retries with a real ``task_state_store`` and triggers are
Airflow's own, and the test process's Airflow settings stay untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def run_airflow(env: Mapping[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``airflow *args`` and assert it succeeded, showing the tail of its output if not."""
    result = subprocess.run([AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-3000:])
    return result


def airflow_home(home: Path, dags_folder: Path | None = None, **settings: str) -> dict[str, str]:
    """The environment of an Airflow living in ``home``: its own migrated SQLite metadata DB.

    ``settings`` are added to the environment (``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="True"``, …).
    The caller's own ``AIRFLOW*`` variables are left out, so nothing leaks in from the test process.
    """
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        **({"AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder)} if dags_folder else {}),
        **settings,
    }
    if dags_folder is not None:
        run_airflow(env, "db", "migrate", timeout=600)
    return env


#: Runs DAGs the way a run triggered from the UI, ``airflow dags trigger`` or the REST API does: with
#: no logical date (``airflow dags test`` always sets one, which hides templates that need it).
_MANUAL_RUNS = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from support.airflow_compat import dag_bag

folder = Path(sys.argv[1])
bag = dag_bag(folder)
assert not bag.import_errors, bag.import_errors
for dag_id, conf in json.loads(sys.argv[2]):
    run = bag.dags[dag_id].test(logical_date=None, run_conf=conf)
    print("MANUAL RUN " + json.dumps({"dag_id": dag_id, "run_id": run.run_id, "state": str(run.state),
          "logical_date": run.logical_date, "run_after": run.run_after.isoformat()}), flush=True)
"""


def run_manually(
    env: Mapping[str, str], dags_folder: Path, *runs: tuple[str, dict[str, Any]], timeout: float = 300
) -> tuple[list[dict[str, Any]], str]:
    """Run each ``(dag_id, conf)`` in turn as a manual run without a logical date, in one subprocess.

    Returns one ``{dag_id, run_id, state, logical_date, run_after}`` per run, and the output (the
    task logs). A failed run is reported in ``state``, not raised.
    """
    script = _MANUAL_RUNS.replace("{tests!r}", repr(str(Path(__file__).resolve().parents[1])))
    result = subprocess.run(
        [sys.executable, "-c", script, str(dags_folder), json.dumps(runs)],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    reports = [
        json.loads(line.removeprefix("MANUAL RUN "))
        for line in result.stdout.splitlines()
        if line.startswith("MANUAL RUN ")
    ]
    assert result.returncode == 0 and len(reports) == len(runs), (result.stdout[-6000:], result.stderr[-3000:])
    return reports, result.stdout
