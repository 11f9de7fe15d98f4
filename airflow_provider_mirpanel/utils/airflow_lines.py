"""What the Airflow lines this provider runs on (3.1, 3.2, 3.3) do differently, decided once, here.

The version flags and Airflow's names live in :mod:`airflow_provider_mirpanel.version_compat`;
what the lines *do* differently is decided here, by those flags, once:

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
is refused when the DAG is parsed. Nothing else in the package asks which line it runs on
(``version_compat`` aside, which only computes the flags).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_mirpanel.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION, STATE_STORES, mask_secret


def airflow_line() -> str:
    """``"3.2.2"``: the running Airflow, for messages."""
    return ".".join(map(str, AIRFLOW_VERSION))


def requires_state_stores(what: str) -> None:
    """Refuse ``what`` (a feature needing the asset state store) below Airflow 3.3, with ValueError."""
    if not STATE_STORES:
        raise ValueError(
            f"{what} needs Airflow 3.3 or later (the asset state store); this is Airflow "
            f"{airflow_line()}. Leave it out: the ledger then lives per task instance (see the "
            "README, 'Airflow lines')"
        )


async def amask_secret(secret: str) -> None:
    """Register ``secret`` with the secrets masker from a coroutine (a trigger)."""
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as _amask_secret

        await _amask_secret(secret)
    else:  # 3.1 and 3.2: the sync call is safe in a coroutine (it only tells the masker)
        mask_secret(secret)


async def aextra_dejson(conn: Any) -> dict[str, Any]:
    """Return a connection's extras as a dict, read from a coroutine."""
    if AIRFLOW_V_3_3_PLUS:
        return dict(await conn.aextra_dejson())
    return dict(conn.extra_dejson)


def connection_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Return provider_info's declarative ``conn-fields`` as the WTForms fields Airflow 3.1 reads.

    Airflow 3.1 reads them from ``get_connection_form_widgets``; 3.2+ reads ``conn-fields`` itself and
    never calls this.

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
        widgets[name] = kinds.get(kind, StringField)(
            field["label"], description=field.get("description", ""), default=schema.get("default")
        )
    return widgets


def ui_field_behaviour(declarative: Mapping[str, Any]) -> dict[str, Any]:
    """Return provider_info's ``ui-field-behaviour`` as Airflow 3.1's ``get_ui_field_behaviour`` returns it.

    ``hidden-fields``, ``relabeling``, ``placeholders`` become ``hidden_fields``, ….
    """
    return {key.replace("-", "_"): value for key, value in declarative.items()}
