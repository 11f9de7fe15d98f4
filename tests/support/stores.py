"""A ``context["asset_state_store"]`` stand-in kept in memory, for the tests."""

from __future__ import annotations

from typing import Any

from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore


class MemoryAssetStores:
    """A ``context["asset_state_store"]`` stand-in kept in memory: one :class:`InProcessStateStore` per asset.

    Share one between several ``op.execute(context)`` calls to stand for DAG runs of one deployment.
    """

    def __init__(self) -> None:
        self.stores: dict[str, InProcessStateStore] = {}

    def __getitem__(self, asset: Any) -> InProcessStateStore:
        return self.stores.setdefault(asset.name, InProcessStateStore())

    def __repr__(self) -> str:
        return f"MemoryAssetStores({sorted(self.stores)})"
