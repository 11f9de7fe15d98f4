"""A real Airflow metadata DB (SQLite in a temporary AIRFLOW_HOME) for the MirPanel page's tests, and writers
that put rows into it the way Airflow does: assets, state-store values through Airflow's state backend,
asset events, triggers of asset watchers.

The test process's Airflow settings are pointed at the temporary DB for the tests using it and back afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_mirpanel.version_compat import STATE_STORES

#: Settings of the temporary Airflow (JWTs are signed and checked with this secret).
SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
}


@contextmanager
def metadata_db(home: Path, create: bool = True) -> Iterator[None]:
    """Airflow's ORM on the SQLite DB ``home/airflow.db`` for the duration of the block: a new one, or (``create``
    False) the one an Airflow living in ``home`` (``tests/airflow_cli.airflow_home``) migrated and ran in."""
    from airflow import settings
    from airflow.utils.db import initdb

    values = {**SETTINGS, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        settings.configure_vars()
        settings.reconfigure_orm()
        if create:
            initdb()
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        settings.configure_vars()
        settings.reconfigure_orm()


@contextmanager
def auth_manager(manager: Any) -> Iterator[Any]:
    """``manager`` as the api-server's auth manager (what ``get_auth_manager()`` returns) in the block."""
    from airflow.api_fastapi import app

    # 3.2+ keep it in _AuthManagerState.instance, 3.1 in the module's auth_manager
    holder, name = (app._AuthManagerState, "instance") if hasattr(app, "_AuthManagerState") else (app, "auth_manager")
    previous = getattr(holder, name)
    setattr(holder, name, manager)
    try:
        yield manager
    finally:
        setattr(holder, name, previous)


def token(manager: Any, username: str = "ops", role: str = "admin") -> str:
    """A JWT of a simple-auth-manager user, as ``/auth/token`` issues."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role)))


def session() -> Any:
    from airflow.utils.session import create_session

    return create_session()


def add_asset(name: str, uri: str) -> int:
    """An asset row (as the dag-processor adds one for a DAG's inlets/outlets); its id."""
    from airflow.models.asset import AssetModel

    with session() as s:
        asset = AssetModel(name=name, uri=uri, group="asset")
        s.add(asset)
        s.flush()
        return int(asset.id)


def set_state(
    asset_id: int,
    key: str,
    value: Any,
    dag_id: str | None = "mirpanel_campaign",
    run_id: str = "run_1",
    task_id: str = "place_orders",
    at: datetime | None = None,
) -> None:
    """A value in an asset's state store, written through Airflow's state backend as a task's write is (as a
    watcher's, without a task, when ``dag_id`` is None); ``at`` replaces the time Airflow recorded."""
    assert STATE_STORES
    from airflow._shared.state import AssetScope, AssetStateStoreWriterKind
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.state.metastore import _get_db_backend

    with session() as s:
        if dag_id is None:
            _get_db_backend().set_asset_state_store(
                AssetScope(asset_id=asset_id), key, json.dumps(value), kind=AssetStateStoreWriterKind.WATCHER, session=s
            )
        else:
            _get_db_backend().set_asset_state_store(
                AssetScope(asset_id=asset_id),
                key,
                json.dumps(value),
                kind=AssetStateStoreWriterKind.TASK,
                dag_id=dag_id,
                run_id=run_id,
                task_id=task_id,
                map_index=-1,
                session=s,
            )
        if at is not None:
            row = s.get(AssetStateStoreModel, (asset_id, key))
            row.updated_at = at


def add_event(
    asset_id: int,
    extra: Mapping[str, Any],
    dag_id: str = "mirpanel_campaign",
    run_id: str = "run_1",
    task_id: str = "wait_for_orders",
    at: datetime | None = None,
) -> None:
    from airflow.models.asset import AssetEvent

    with session() as s:
        s.add(
            AssetEvent(
                asset_id=asset_id,
                extra=dict(extra),
                source_dag_id=dag_id,
                source_run_id=run_id,
                source_task_id=task_id,
                timestamp=at or datetime.now(timezone.utc),
            )
        )


def add_watcher(asset_id: int, classpath: str, kwargs: Mapping[str, Any]) -> None:
    """A trigger watching an asset (an ``AssetWatcher``), as the dag-processor stores it."""
    from airflow.models.asset import AssetWatcherModel
    from airflow.models.trigger import Trigger

    with session() as s:
        trigger = Trigger(classpath=classpath, kwargs=dict(kwargs))
        s.add(trigger)
        s.flush()
        s.add(AssetWatcherModel(name="mirpanel_balance_watch", asset_id=asset_id, trigger_id=trigger.id))
