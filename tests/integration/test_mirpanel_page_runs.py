"""The MirPanel page over what real Airflow runs stored: a campaign placed by PlaceOrderOperator with a ledger scope
(one reply lost on the way back), run as manual DAG runs in a subprocess against the sandbox panel, then the page
read in this process from the same metadata DB.

Evidence that the page reads the ledger pages, the placement's XCom of unknown orders (service, link), the
"placed" event's ``ledger_scope`` and the balance check's history exactly as Airflow's own machinery writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import support.mirpanel_page_db as db
from support.airflow_cli import airflow_home, run_manually
from support.airflow_compat import needs_state_stores

from airflow_provider_mirpanel.sandbox import SandboxPanel

SCOPE = "black <friday>"

DAG_FILE = """
from datetime import datetime

from airflow.sdk import DAG, Asset, Param

from airflow_provider_mirpanel.assets.events import CampaignAssetEvent
from airflow_provider_mirpanel.operators.mirpanel import BalanceCheckOperator, PlaceOrderOperator

with DAG("ui_page_campaign", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"campaign": Param("c", type="string"), "on_unknown": Param("fail", type="string")}):
    BalanceCheckOperator(task_id="balance") >> PlaceOrderOperator(
        task_id="place_orders", orders=ORDERS, ledger_scope="{{ params.campaign }}",
        on_unknown="{{ params.on_unknown }}", retries=0, outlets=[Asset("ui_page_placed")],
        post_execute=CampaignAssetEvent("placed", "{{ params.campaign }}"))
"""


@needs_state_stores
@pytest.mark.slow  # Airflow runs in a subprocess: seconds
def test_the_page_shows_what_real_runs_stored(panel: SandboxPanel, tmp_path: Path) -> None:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from fastapi.testclient import TestClient

    from airflow_provider_mirpanel.plugins.app import create_app

    service = next(s for s in panel.catalogue.services if s.get("type") == "Default")
    orders = [
        {
            "key": f"row-{n}",
            "service": service["service"],
            "link": f"https://ig.example/p/{n}",
            "quantity": service["min"],
        }
        for n in range(3)
    ]
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ui_page_campaign.py").write_text(DAG_FILE.replace("ORDERS", repr(orders)))
    env = {**airflow_home(tmp_path / "home", dags), **panel.env()}
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"].endswith("/1"), times=1)

    (failed, skipped), _ = run_manually(
        env,
        dags,
        ("ui_page_campaign", {"campaign": SCOPE}),
        ("ui_page_campaign", {"campaign": SCOPE, "on_unknown": "skip"}),
    )
    assert (failed["state"], skipped["state"]) == ("failed", "success")

    with db.metadata_db(tmp_path / "home", create=False), db.auth_manager(SimpleAuthManager()) as manager:
        client = TestClient(create_app(), root_path="/mirpanel")
        headers = {"Authorization": f"Bearer {db.token(manager)}"}
        data: dict[str, Any] = client.get("/data.json", headers=headers).json()
        page = client.get("/", headers=headers).text

    campaign = next(c for c in data["campaigns"]["items"] if c["scope"] == SCOPE)
    assert (campaign["conn_id"], campaign["placed"], campaign["refused"], campaign["unknown"]) == (
        "mirpanel_default",
        2,
        0,
        1,
    )
    # the placement's lease (released at its end) names the run that last wrote the scope
    assert campaign["last_written"]["source"] == "lease" and campaign["last_written"]["at"]
    # the "placed" event of the second run carries the scope: matched although no finished event exists yet
    assert campaign["events_spend"] is not None
    [unknown] = data["unknown_orders"]["items"]
    assert (unknown["key"], unknown["service"], unknown["link"]) == (
        "row-1",
        service["service"],
        "https://ig.example/p/1",
    )
    history = next(h for c in data["connections"] for h in c["histories"] if h["source"] == "balance check")
    assert [reading["balance"] for reading in history["readings"]] == [1000.0]
    assert "black &lt;friday&gt;" in page and '<a href="https://ig.example/p/1"' in page
    assert panel.api_key not in page and panel.api_key not in json.dumps(data)
