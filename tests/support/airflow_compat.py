"""The Airflow names the tests use that moved between 3.1, 3.2 and 3.3.

The package's own go through :mod:`airflow_provider_mirpanel.version_compat`; these are the few only
tests need, chosen by the same version checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mirpanel.version_compat import AIRFLOW_V_3_2_PLUS, STATE_STORES

if AIRFLOW_V_3_2_PLUS:
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.sdk.exceptions import AirflowRescheduleException
    from airflow.sdk.serde import deserialize, serialize
else:  # 3.1
    from airflow.exceptions import AirflowRescheduleException  # type: ignore[no-redef,unused-ignore]
    from airflow.models.dagbag import BundleDagBag  # type: ignore[no-redef,unused-ignore]
    from airflow.serialization.serde import deserialize, serialize  # type: ignore[no-redef,unused-ignore]


def dag_bag(folder: Path) -> Any:
    """The DAGs of ``folder``, parsed as the dag-processor does (a bundle named ``dags-folder``)."""
    if AIRFLOW_V_3_2_PLUS:
        return BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder")
    return BundleDagBag(dag_folder=str(folder), bundle_path=folder)


#: Tests of ``ledger_scope`` and what uses it (the campaign examples): Airflow 3.3's asset state store.
needs_state_stores = pytest.mark.skipif(not STATE_STORES, reason="ledger_scope needs Airflow 3.3's asset state store")

__all__ = ["STATE_STORES", "AirflowRescheduleException", "dag_bag", "deserialize", "needs_state_stores", "serialize"]
