"""The MirPanel plugin: registered by the installed package, cheap to import, its keys read back safely."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_mirpanel.placement.lease import Lease
from airflow_provider_mirpanel.plugins.ledger_keys import LedgerKey, parse_key

CHEAP_IMPORT = """
import sys
import airflow_provider_mirpanel.plugins.mirpanel_page as module
plugin = module.MirPanelPagePlugin()
[app] = plugin.fastapi_apps
assert app["url_prefix"] == "/mirpanel" and repr(app["app"]).startswith("LazyApp(")
assert [view["name"] for view in plugin.external_views] == ["MirPanel"]
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("fastapi", "starlette")
                or name.startswith("airflow_provider_mirpanel.plugins.") and not name.endswith("mirpanel_page"))
print(loaded)
"""


def test_the_package_registers_the_plugin_by_entry_point() -> None:
    [entry] = [entry for entry in entry_points(group="airflow.plugins") if entry.name == "mirpanel"]
    assert entry.value == "airflow_provider_mirpanel.plugins.mirpanel_page:MirPanelPagePlugin"


def test_the_plugin_module_is_cheap_builds_no_app_and_touches_no_database(tmp_path: Path) -> None:
    database = tmp_path / "never-created.db"
    result = subprocess.run(
        [sys.executable, "-c", CHEAP_IMPORT],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"  # neither FastAPI nor the app's modules were imported
    assert not database.exists()


def test_the_plugin_is_loaded_by_airflows_plugin_manager() -> None:
    from airflow import plugins_manager

    plugins = plugins_manager._get_plugins()[0] if hasattr(plugins_manager, "_get_plugins") else []
    if not plugins:  # Airflow 3.1: the older loader
        plugins_manager.ensure_plugins_loaded()
        plugins = getattr(plugins_manager, "plugins", None) or []
    assert "mirpanel" in {plugin.name for plugin in plugins}


def test_ledger_keys_pages_lease_and_anything_else() -> None:
    assert parse_key("mirpanel.ledger.black_friday.0") == LedgerKey("black_friday", 0)
    assert parse_key("mirpanel.ledger.black_friday.12") == LedgerKey("black_friday", 12)
    assert parse_key("mirpanel.ledger.black.friday.3") == LedgerKey("black.friday", 3)  # quote keeps dots
    assert parse_key("mirpanel.ledger.spring%20launch.lease") == LedgerKey("spring launch", None)
    assert parse_key("mirpanel.ledger.%3Cscript%3E.1") == LedgerKey("<script>", 1)
    for key in (
        "mirpanel.ledger.0",
        "mirpanel.ledger.bf.summary",
        "mirpanel.ledger.bf.007",
        "mirpanel.ledger.bf.-1",
        "mirpanel.ledger.bf.",
        "mirpanel.ledger.spring launch.0",
        "mirpanel.order.k1",
        "balance_history",
        "mirpanel.ledger.bf.lease.v2",
        "mirpanel.ledger.bf.١",
    ):
        assert parse_key(key) is None, key


def test_a_lease_is_read_only_in_its_own_shape() -> None:
    owner = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
    held = Lease.from_json(
        {"owner": owner, "token": "x", "taken_at": 10, "renewed_at": 20.5, "expires": 100, "released_at": None}
    )
    assert held is not None and held.held(50) and not held.held(100) and held.last_written == 20.5
    released = Lease.from_json(
        {"owner": owner, "token": "x", "taken_at": 10, "renewed_at": 20, "expires": 0, "released_at": 30}
    )
    assert released is not None and not released.held(15) and released.last_written == 30
    values: list[Any] = [
        None,
        [],
        {"owner": "d"},
        {"owner": {**owner, "dag_id": 1}, "taken_at": 1, "renewed_at": 1, "expires": 1},
        {"owner": owner, "taken_at": "1", "renewed_at": 1, "expires": 1},
        {"owner": owner},
    ]
    for value in values:
        assert Lease.from_json(value) is None, value


ROW = st.one_of(
    st.tuples(
        st.sampled_from(["k1", "k2", "k3", 4]),
        st.sampled_from(["sending", "placed", "unknown", "refused", "lost", None]),
        st.just("d"),
        st.one_of(st.none(), st.integers(1, 9)),
        st.one_of(st.none(), st.floats(0, 1)),
        st.none(),
    ).map(list),
    st.lists(st.text(max_size=2), max_size=7),
    st.text(max_size=3),
    st.integers(),
    st.none(),
)


@given(pages=st.lists(st.lists(ROW, max_size=6), max_size=5), gap=st.booleans())
def test_the_page_folds_a_ledger_as_the_ledger_reads_it(pages: list[list[Any]], gap: bool) -> None:
    """The page's reading of a scope's pages equals PlacementLedger.load's, whatever rows the pages hold."""
    from airflow_provider_mirpanel.placement.ledger import PlacementLedger
    from airflow_provider_mirpanel.plugins.gather import _fold
    from airflow_provider_mirpanel.taskstate import MemoryStateStore

    store = MemoryStateStore()
    stored = {number: rows for number, rows in enumerate(pages) if not (gap and number == 1)}
    for number, rows in stored.items():
        store.set(f"mirpanel.ledger.s.{number}", rows)
    count = 0
    while count in stored:
        count += 1
    assert {key: entry for key, (entry, _) in _fold(stored, count).items()} == PlacementLedger(store, "s").load()
