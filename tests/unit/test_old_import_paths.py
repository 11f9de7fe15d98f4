"""The import paths of version 0.2.0 keep working after the layout move (issue 21), and so do the
class paths Airflow reads from provider info.

Users' DAGs import the public modules by their documented paths; a deployment's installed metadata
may still name the old ``provider_info`` entry point. Each old path is a thin re-export of the new.
"""

from __future__ import annotations

import importlib

import pytest

from airflow_provider_mirpanel.get_provider_info import get_provider_info

#: Old module path → the module that holds its code now.
MOVED = {
    "airflow_provider_mirpanel.provider_info": "airflow_provider_mirpanel.get_provider_info",
    "airflow_provider_mirpanel.ledger": "airflow_provider_mirpanel.placement.ledger",
    "airflow_provider_mirpanel.placement": "airflow_provider_mirpanel.placement.run",
    "airflow_provider_mirpanel.taskstate": "airflow_provider_mirpanel.utils.state_stores",
    "airflow_provider_mirpanel.spending": "airflow_provider_mirpanel.balance.spending",
    "airflow_provider_mirpanel.assets": "airflow_provider_mirpanel.assets.events",
    "airflow_provider_mirpanel.lineage": "airflow_provider_mirpanel.assets.lineage",
    "airflow_provider_mirpanel.links": "airflow_provider_mirpanel.links.order_page",
}

#: What users import by the old paths (README, docs, example DAGs of 0.2.0).
USED = {
    "airflow_provider_mirpanel.provider_info": ["get_provider_info"],
    "airflow_provider_mirpanel.ledger": ["ledger_asset", "PlacementLedger", "LedgerState", "PAGE_PREFIX"],
    "airflow_provider_mirpanel.placement": ["OrdersNotPlacedError", "OrdersUnresolvedError", "order_specs"],
    "airflow_provider_mirpanel.taskstate": ["MemoryStateStore", "RecordPages", "StateStore", "digest"],
    "airflow_provider_mirpanel.spending": ["BalanceHistory", "spend_rate", "assess"],
    "airflow_provider_mirpanel.assets": ["CampaignAssetEvent", "balance_asset", "campaign_summary", "run_events"],
    "airflow_provider_mirpanel.lineage": ["collect", "dataset_uri", "sanitize_uri", "ORDERS"],
    "airflow_provider_mirpanel.links": ["PanelOrderLink", "ORDER_URL_XCOM_KEY", "order_page_url"],
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_gives_the_same_objects_as_the_new_one(old: str) -> None:
    before, now = importlib.import_module(old), importlib.import_module(MOVED[old])
    for name in USED[old]:
        assert getattr(before, name) is getattr(now, name), name


def test_the_class_paths_of_provider_info_import() -> None:
    info = get_provider_info()
    paths = [*info["extra-links"], info["connection-types"][0]["hook-class-name"]]
    paths += [uri[key] for uri in info["asset-uris"] for key in ("handler", "to_openlineage_converter")]
    for path in paths:
        module, _, name = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), path
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for module in info[kind][0]["python-modules"]:
            importlib.import_module(module)


def test_the_fallback_stores_keep_their_former_names() -> None:
    from airflow_provider_mirpanel.triggers.balance import MemoryWatchStore
    from airflow_provider_mirpanel.utils.fallback_stores import InProcessStateStore, InProcessWatchStore
    from airflow_provider_mirpanel.utils.state_stores import MemoryStateStore

    assert (MemoryStateStore, MemoryWatchStore) == (InProcessStateStore, InProcessWatchStore)
