"""Which Airflow line runs this provider (3.1, 3.2 or 3.3): version flags, and Airflow's names.

As in every official provider: the flags come from ``airflow.__version__``, and Airflow's names come
through ``airflow.providers.common.compat.sdk``, which finds each where the running line keeps it
(``airflow.sdk.exceptions`` from 3.2, ``airflow.exceptions`` before; ``airflow.sdk.conf`` from 3.2,
``airflow.configuration.conf`` before). What the lines *do* differently is decided in
:mod:`airflow_provider_mirpanel.utils.airflow_lines`.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    Asset,
    BaseHook,
    BaseOperator,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
    TaskDeferred,
    conf,
)

# the same on 3.1, 3.2 and 3.3; common-compat has it only in releases after 1.21
from airflow.sdk.log import mask_secret

__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "DECLARATIVE_CONN_FIELDS",
    "STATE_STORES",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "Asset",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "Context",
    "PokeReturnValue",
    "TaskDeferred",
    "conf",
    "mask_secret",
]


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """Return the running Airflow's ``(major, minor, micro)``, pre-releases counted as their release."""
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)
    return version.major, version.minor, version.micro


#: The running Airflow's ``(major, minor, micro)``.
AIRFLOW_VERSION: tuple[int, int, int] = get_base_airflow_version_tuple()
AIRFLOW_V_3_2_PLUS: bool = AIRFLOW_VERSION >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS: bool = AIRFLOW_VERSION >= (3, 3, 0)
#: Whether tasks get ``context["task_state_store"]`` and ``context["asset_state_store"]`` (3.3+).
STATE_STORES: bool = AIRFLOW_V_3_3_PLUS
#: Whether Airflow reads the connection form from provider_info's ``conn-fields`` (3.2+); 3.1 reads
#: only the hook's ``get_connection_form_widgets``/``get_ui_field_behaviour``.
DECLARATIVE_CONN_FIELDS: bool = AIRFLOW_V_3_2_PLUS
