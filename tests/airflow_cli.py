"""Run the ``airflow`` command of this virtualenv against a throwaway Airflow home.

The DAG-run tests use real ``airflow dags test`` runs in a subprocess: the task runner, XCom
serialization, template rendering, retries with a real ``task_state_store`` and triggers are
Airflow's own, and the test process's Airflow settings stay untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

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
