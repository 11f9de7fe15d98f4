"""The smallest task context the operators and sensors read: a ``task_state_store``.

Airflow's ``Context`` is a ``TypedDict`` whose store is the Execution API's accessor; tests hand
in an in-memory store with the same ``get``/``set``/``delete`` methods.
"""

from __future__ import annotations

from typing import Any, cast

from airflow.sdk import Context

from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore


def task_context(store: Any = None, **more: Any) -> Context:
    """A context whose ``task_state_store`` is ``store`` (a new ``InProcessStateStore`` when None)."""
    return cast(Context, {"task_state_store": InProcessStateStore() if store is None else store, **more})


class StandInTi:
    """The task instance's XCom as a task process has it: pushed by the task, pulled by the link."""

    task_id, map_index = "place", -1

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> Any:
        assert (task_ids, map_indexes) == (self.task_id, self.map_index)
        return self.xcoms.get(key)
