"""The one module that knows which Airflow line runs this provider: 3.1, 3.2 or 3.3.

Official providers do it this way: version flags computed here from ``airflow.__version__`` (each
official provider has such a ``version_compat.py``), and Airflow's names come through
``airflow.providers.common.compat.sdk`` (which finds each name where the running line keeps it:
``airflow.sdk.exceptions`` from 3.2, ``airflow.exceptions`` before; ``airflow.sdk.conf`` from 3.2,
``airflow.configuration.conf`` before), and what the lines *do* differently is decided here, by
version checks, once:

=============================  ==================  ==================  ===================
                               3.1                 3.2                 3.3
=============================  ==================  ==================  ===================
connection form read from      the hook's methods  ``conn-fields``     ``conn-fields``
secret masked in a trigger by  ``mask_secret``     ``mask_secret``     ``amask_secret``
async connection extras        ``extra_dejson``    ``extra_dejson``    ``aextra_dejson()``
``task_state_store``           no                  no                  yes
``asset_state_store``          no                  no                  yes
=============================  ==================  ==================  ===================

Without the state stores (3.1, 3.2) the placement ledger lives in memory for one try, and a retry
is *blind*: it sends no order an earlier try may have sent (see ``ledger.py``); ``ledger_scope``
is refused when the DAG is parsed. Nothing else in the package asks which line it runs on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    "aextra_dejson",
    "airflow_line",
    "amask_secret",
    "conf",
    "connection_form_widgets",
    "mask_secret",
    "requires_state_stores",
    "ui_field_behaviour",
]



def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """The running Airflow's ``(major, minor, micro)``, pre-releases counted as their release."""
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


def airflow_line() -> str:
    """``"3.2.2"``: the running Airflow, for messages."""
    return ".".join(map(str, AIRFLOW_VERSION))


def requires_state_stores(what: str) -> None:
    """Refuse ``what`` (a feature needing the asset state store) below Airflow 3.3, with ValueError."""
    if not STATE_STORES:
        raise ValueError(f"{what} needs Airflow 3.3 or later (the asset state store); this is Airflow "
                         f"{airflow_line()}. Leave it out: the ledger then lives per task instance (see the "
                         "README, 'Airflow lines')")


async def amask_secret(secret: str) -> None:
    """Register ``secret`` with the secrets masker from a coroutine (a trigger)."""
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as _amask_secret

        await _amask_secret(secret)
    else:  # 3.1 and 3.2: the sync call is safe in a coroutine (it only tells the masker)
        mask_secret(secret)


async def aextra_dejson(conn: Any) -> dict[str, Any]:
    """A connection's extras as a dict, read from a coroutine."""
    if AIRFLOW_V_3_3_PLUS:
        return dict(await conn.aextra_dejson())
    return dict(conn.extra_dejson)


def connection_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """provider_info's declarative ``conn-fields`` as the WTForms fields Airflow 3.1 reads from
    ``get_connection_form_widgets`` (3.2+ reads ``conn-fields`` itself and never calls this).

    Airflow 3.1's UI builds the form with stand-ins for WTForms; ``airflow providers widgets``
    needs the real ``wtforms`` package, which this provider declares.
    """
    from wtforms import BooleanField, IntegerField, StringField

    kinds = {"boolean": BooleanField, "integer": IntegerField}
    widgets: dict[str, Any] = {}
    for name, field in conn_fields.items():
        schema = field.get("schema", {})
        types = schema.get("type", "string")
        kind = next(t for t in ([types] if isinstance(types, str) else types) if t != "null")
        widgets[name] = kinds.get(kind, StringField)(field["label"], description=field.get("description", ""),
                                                      default=schema.get("default"))
    return widgets


def ui_field_behaviour(declarative: Mapping[str, Any]) -> dict[str, Any]:
    """provider_info's ``ui-field-behaviour`` (``hidden-fields``, ``relabeling``, ``placeholders``) as
    Airflow 3.1's ``get_ui_field_behaviour`` returns it (``hidden_fields``, …)."""
    return {key.replace("-", "_"): value for key, value in declarative.items()}
