"""A ``context["asset_state_store"]`` stand-in kept in memory, for the tests."""

from __future__ import annotations

from typing import Any

from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore


class MemoryAssetStores:
    """A ``context["asset_state_store"]`` stand-in kept in memory: one :class:`MemoryStateStore` per asset.

    Share one between several ``op.execute(context)`` calls to stand for DAG runs of one deployment.
    """

    def __init__(self) -> None:
        self.stores: dict[str, MemoryStateStore] = {}

    def __getitem__(self, asset: Any) -> MemoryStateStore:
        return self.stores.setdefault(asset.name, MemoryStateStore())

    def __repr__(self) -> str:
        return f"MemoryAssetStores({sorted(self.stores)})"
