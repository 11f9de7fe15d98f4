"""The in-process state stores this provider falls back to where Airflow gives it none.

- :class:`InProcessStateStore` is the placement ledger's store on Airflow 3.1 and 3.2 (no
  ``task_state_store``) and in a bare ``op.execute(context)``: it lives as long as the task's try,
  so a retry cannot see what an earlier try placed (the ledger then sends nothing blindly).
- :class:`InProcessWatchStore` is :class:`~airflow_provider_mirpanel.triggers.balance.BalanceTrigger`'s
  store when no asset state store is given to it (outside a triggerer, e.g. ``make demo``, or a trigger
  watched by several assets): its alert state lives as long as the trigger's process.

Both copy values through JSON, as Airflow's stores keep them. Tests use them as stand-ins of
Airflow's stores too.
"""

from __future__ import annotations

import json
from typing import Any


class InProcessStateStore:
    """A ``task_state_store`` kept in the task's process: the fallback where Airflow gives none."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) under ``key``; None is refused, as Airflow's store refuses it."""
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.loads(json.dumps(value))

    def __repr__(self) -> str:
        return f"InProcessStateStore({len(self.values)} keys)"


class InProcessWatchStore:
    """An asset state store (``aget``/``aset``) kept in the trigger's process: the balance watch's fallback.

    Give the same one to two trigger instances to stand for a triggerer restart.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) under ``key``."""
        self.values[key] = json.loads(json.dumps(value))
        self.writes += 1
