"""Issue 20: mapped placement into one ledger scope, in a real ``airflow dags test`` run.

``PlaceOrderOperator.partial(ledger_scope=...).expand(orders=chunks)``: the mapped instances reach the
ledger asset's state store (it is among the inlets from parse time), place every row once, and the
same campaign again buys nothing. The sandbox panel's order list is the evidence.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.airflow_cli import AIRFLOW, airflow_home
from support.airflow_compat import needs_state_stores
from support.leases import rows

from airflow_provider_mirpanel.sandbox import SandboxPanel

pytestmark = [needs_state_stores, pytest.mark.slow]

DAGS = Path(__file__).parents[1] / "dags"


def dags_test(env: dict[str, str], conf: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRFLOW, "dags", "test", "mirpanel_mapped_scope_test", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_mapped_chunks_place_every_row_once_and_the_same_campaign_again_buys_nothing(
    panel: SandboxPanel, tmp_path: Path
) -> None:
    env = {**airflow_home(tmp_path / "home", DAGS), **panel.env()}
    campaign = rows(panel, 60, tag="mapped")

    first = dags_test(env, {"rows": campaign, "scope": "mapped-campaign"})

    assert first.returncode == 0, (first.stdout[-6000:], first.stderr[-3000:])
    held = Counter(order.link for order in list(panel.state.orders.values()))
    assert held == Counter(row["link"] for row in campaign), "60 rows in 6 chunks: 60 orders, one per row"
    assert first.stdout.count("Claimed ledger scope 'mapped-campaign'") == 6

    panel.requests.clear()
    again = dags_test(env, {"rows": campaign, "scope": "mapped-campaign"})

    assert again.returncode == 0, (again.stdout[-6000:], again.stderr[-3000:])
    assert panel.count("add") == 0 and len(panel.state.orders) == 60, "the same campaign again: 0 new orders"
