"""OpenLineage facets of the operators and sensors, and the hook's lineage, against the sandbox.

The panel is the namespace ``mirpanel://127.0.0.1:<port>``; its datasets are orders, services, refills
and balance. The API key is in no facet. The "Panel order" extra link is in ``unit/links/test_order_page.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import attrs
import pytest
from support.airflow_compat import STATE_STORES
from support.orders import place_one, service_of

from airflow_provider_mirpanel.operators.mirpanel import (
    BalanceCheckOperator,
    CancelOrdersOperator,
    OrderStatusOperator,
    PlaceOrderOperator,
    RefillOperator,
    ResolveOrdersOperator,
    ServicesOperator,
)
from airflow_provider_mirpanel.sandbox import SandboxPanel
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor, RefillStatusSensor

ROOT = Path(__file__).resolve().parents[3]


def datasets(lineage: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return ([(d.namespace, d.name) for d in lineage.inputs], [(d.namespace, d.name) for d in lineage.outputs])


def test_every_operator_names_the_panel_datasets_it_read_and_wrote(panel: SandboxPanel) -> None:
    namespace = f"mirpanel://127.0.0.1:{panel.port}"
    placer, [placed] = place_one(panel, check_balance=True)
    order = [placed["order"]]
    expected: list[tuple[Any, list[str], list[str]]] = [
        (placer, ["services", "balance"], ["orders"]),
        (PlaceOrderOperator(task_id="p", orders=[], services=[]), [], ["orders"]),  # a catalogue given, no balance
        (ServicesOperator(task_id="s"), ["services"], []),
        (OrderStatusOperator(task_id="o", order_ids=order), ["orders"], []),
        (RefillOperator(task_id="r", order_ids=order), ["orders"], ["refills"]),
        (CancelOrdersOperator(task_id="c", order_ids=order), ["orders"], ["orders"]),
        (BalanceCheckOperator(task_id="b"), ["balance"], []),
        *([(ResolveOrdersOperator(task_id="v", ledger_scope="spring"), ["orders"], [])] if STATE_STORES else []),
        (OrderStatusSensor(task_id="w", order_ids=order), ["orders"], []),
        (RefillStatusSensor(task_id="x", refill_ids=[1]), ["refills"], []),
    ]
    for operator, inputs, outputs in expected:
        lineage = operator.get_openlineage_facets_on_complete(None)
        assert datasets(lineage) == ([(namespace, n) for n in inputs], [(namespace, n) for n in outputs]), operator
        assert panel.api_key not in json.dumps(attrs.asdict(lineage), default=str)
    assert panel.count("add") == 1  # asking for lineage sends nothing


def test_the_namespace_is_the_panels_host_without_path_or_credentials() -> None:
    from airflow_provider_mirpanel.assets.lineage import panel_namespace

    assert panel_namespace("https://MirPanel.com/api/v2") == "mirpanel://mirpanel.com"
    assert panel_namespace("https://user:secret@panel.example:8443/api/v2?key=x") == "mirpanel://panel.example:8443"


def test_everything_imports_and_gives_no_facets_without_the_openlineage_provider(panel: SandboxPanel) -> None:
    code = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("openlineage", "airflow.providers.openlineage.extractors")):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Refuse())
from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator, ServicesOperator
from airflow_provider_mirpanel.sensors.mirpanel import OrderStatusSensor
from airflow_provider_mirpanel.links.order_page import PanelOrderLink
print(ServicesOperator(task_id="s").get_openlineage_facets_on_complete(None),
      OrderStatusSensor(task_id="w", order_ids=[1]).get_openlineage_facets_on_complete(None))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["None", "None"]


def hook_lineage_collector() -> Any:
    """A fresh instance of Airflow's real hook lineage collector (what the OpenLineage plugin enables)."""
    try:
        from airflow.providers.common.compat.sdk import HookLineageCollector
    except ImportError:  # an older common-compat
        from airflow.lineage.hook import HookLineageCollector  # type: ignore[no-redef,unused-ignore]
    return HookLineageCollector()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Airflow's hook lineage collector, as it is in a task process with OpenLineage enabled."""
    import airflow.providers.common.compat.lineage.hook as compat_hook

    fresh = hook_lineage_collector()
    monkeypatch.setattr(compat_hook, "get_hook_lineage_collector", lambda: fresh)
    return fresh


def collected(collector: Any) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The URIs of the collected input and output assets (one entry per reporting hook or engine), with
    how often each was reported."""
    assets = collector.collected_assets
    return (
        sorted((info.asset.uri, info.count) for info in assets.inputs),
        sorted((info.asset.uri, info.count) for info in assets.outputs),
    )


def as_openlineage(info: Any) -> tuple[str, str]:
    """What OpenLineage's listener makes of a collected asset (the converters the providers register)."""
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    dataset = translate_airflow_asset(info.asset, info.context)
    assert dataset is not None, f"no OpenLineage dataset for {info.asset.uri}"
    return dataset.namespace, dataset.name


def test_the_hook_reports_what_each_action_read_and_wrote_once(panel: SandboxPanel, collector: Any) -> None:
    from airflow_provider_mirpanel.hooks.mirpanel import MirPanelHook

    hook = MirPanelHook()
    service = service_of(panel)
    hook.get_balance()
    order = hook.add_order(service["service"], link="https://example.com/a", quantity=service["min"])["order"]
    hook.add_order(service["service"], link="https://example.com/b", quantity=service["min"])
    hook.get_order_status(order)
    hook.get_orders_status(range(1, 250))  # three requests on threads, one report
    hook.refill_orders([order])
    inputs, outputs = collected(collector)
    # orders: read by status and by refill; each action reported once however often it was called
    assert inputs == [("mirpanel://mirpanel_default/balance", 1), ("mirpanel://mirpanel_default/orders", 2)]
    assert outputs == [("mirpanel://mirpanel_default/orders", 1), ("mirpanel://mirpanel_default/refills", 1)]
    namespace = f"mirpanel://127.0.0.1:{panel.port}"
    assets = collector.collected_assets
    assert sorted({as_openlineage(info) for info in [*assets.inputs, *assets.outputs]}) == [
        (namespace, "balance"),
        (namespace, "orders"),
        (namespace, "refills"),
    ]


def test_a_panel_asset_without_a_hook_is_named_from_its_connection(panel: SandboxPanel) -> None:
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    from airflow_provider_mirpanel.assets.lineage import dataset_uri
    from airflow_provider_mirpanel.version_compat import Asset

    dataset = translate_airflow_asset(Asset(uri=dataset_uri("mirpanel_default", "orders")), None)
    assert dataset is not None
    assert (dataset.namespace, dataset.name) == (f"mirpanel://127.0.0.1:{panel.port}", "orders")
    with pytest.raises(ValueError, match="must name a dataset"):
        Asset(uri="mirpanel://mirpanel_default")


def test_the_example_warehouse_names_its_tables_after_the_panel_datasets_they_load(
    panel: SandboxPanel, collector: Any, warehouse: ModuleType, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, make_url

    # only the URL counts (no driver needed, nothing connects)
    postgres = SimpleNamespace(url=make_url("postgresql+psycopg2://etl:secret@db.internal:6543/marketing"))
    warehouse.report_lineage(postgres, ["orders"], [warehouse.order_status_history, warehouse.orders])
    sqlite = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.metadata.create_all(sqlite)
    statuses = [{"order": 1, "status": "Completed", "charge": 1.0, "checked_at": "2026-11-30T00:00:00+00:00"}]
    assert warehouse.update_statuses(sqlite, statuses) == 0  # no row yet; it still reports
    inputs, outputs = collected(collector)
    assert inputs == [("mirpanel://mirpanel_default/orders", 1)] * 2  # by each engine
    # the form apache-airflow-providers-postgres turns into the dataset marketing.public.<table>;
    # no Airflow provider translates SQLite tables, so those are not reported
    assert outputs == [
        ("postgres://db.internal:6543/marketing/public/order_status_history", 1),
        ("postgres://db.internal:6543/marketing/public/orders", 1),
    ]
    assert "secret" not in json.dumps([*inputs, *outputs])
    table_uri, orders = warehouse.table_uri, warehouse.orders
    assert (
        table_uri(make_url("mysql+mysqldb://etl:secret@db.internal/marketing"), orders)
        == "mysql://db.internal:3306/marketing/orders"
    )
    assert table_uri(make_url(f"sqlite:///{tmp_path / 'w.db'}"), orders) is None
