"""A campaign is bought exactly once across DAG runs: ``mirpanel_campaign`` re-triggered after lost replies
and after a killed run, then its unknown rows resolved with ``mirpanel_resolve_orders``.

Real ``airflow dags test`` runs in subprocesses (their own Airflow home and SQLite metadata DB, so
the ledger lives in Airflow's own asset state store), against the sandbox panel, whose order list
is the evidence: it must hold exactly one order per campaign row.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.airflow_cli import AIRFLOW, airflow_home, run_airflow
from support.airflow_compat import needs_state_stores

from airflow_provider_mirpanel.sandbox import SandboxPanel

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags_examples"
CAMPAIGN = list(csv.DictReader((DAGS / "data" / "campaign.csv").open()))
LINKS = Counter(row["link"] for row in CAMPAIGN)  # two rows share a link (views and saves of one video)
#: The rows whose add replies are lost: the panel processes them, the client sees the connection drop.
LOST = ("tiktok-live-likes", "instagram-likes-post")


pytestmark = needs_state_stores  # the campaign example places into a ledger_scope


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return airflow_home(tmp_path_factory.mktemp("reruns-airflow-home"), DAGS, MIRPANEL_EXAMPLES_POKE_INTERVAL="1")


@pytest.fixture
def env(panel: SandboxPanel, airflow_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    warehouse = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")})
    panel.speed = 100_000  # orders finish at once: these tests are about placing, not waiting
    yield {**airflow_env, **panel.env(), "AIRFLOW_CONN_MIRPANEL_WAREHOUSE": warehouse}


def dags_test(env: Mapping[str, str], dag_id: str, conf: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    """A DAG run with ``conf``; it may fail (its output says how)."""
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def panel_orders(panel: SandboxPanel) -> dict[tuple[int, str], list[int]]:
    """The panel's orders by (service, link)."""
    held: dict[tuple[int, str], list[int]] = {}
    for order in list(panel.state.orders.values()):
        held.setdefault((order.service, order.link or ""), []).append(order.id)
    return held


def assert_one_order_per_row(panel: SandboxPanel) -> None:
    held = panel_orders(panel)
    assert {key: len(ids) for key, ids in held.items()} == {
        (int(row["service"]), row["link"]): 1 for row in CAMPAIGN
    }, "exactly one paid order per campaign row"


def order_of(panel: SandboxPanel, key: str) -> int:
    row = next(row for row in CAMPAIGN if row["key"] == key)
    [order] = panel_orders(panel)[(int(row["service"]), row["link"])]
    return order


def warehouse_orders(env: Mapping[str, str], campaign: str) -> dict[str, int]:
    """The warehouse's ``orders`` rows of a campaign: key → order ID."""
    import sqlalchemy

    path = json.loads(env["AIRFLOW_CONN_MIRPANEL_WAREHOUSE"])["host"]
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("select order_key, order_id from orders where campaign = :c"), {"c": campaign}
        ).all()
    engine.dispose()
    return {key: order for key, order in rows}


def test_lost_replies_then_a_new_run_then_resolved(panel: SandboxPanel, env: dict[str, str]) -> None:
    lost_links = {row["link"] for row in CAMPAIGN if row["key"] in LOST}
    panel.faults.add("add", "drop_after_processing", when=lambda form: form["link"] in lost_links, times=2)
    conf = {"campaign": "lost_replies"}

    # Run 1: two replies lost. Their orders exist; the run fails without retries, naming them.
    first = dags_test(env, "mirpanel_campaign", conf)
    assert first.returncode != 0
    assert "2 orders may exist on the panel" in first.stdout + first.stderr
    assert panel.count("add") == 6
    assert panel.count("services") == 1, "place_orders checks against the services task's catalogue rows"
    assert_one_order_per_row(panel)
    assert "A retry cannot change this" in first.stdout + first.stderr and panel.count("add") == 6, "no retries"
    assert set(warehouse_orders(env, "lost_replies")) == {row["key"] for row in CAMPAIGN} - set(LOST)

    # Run 2, the same campaign: the four placed rows are known, the two unknown ones are not resent.
    second = dags_test(env, "mirpanel_campaign", conf)
    assert second.returncode != 0 and "2 orders may exist on the panel" in second.stdout + second.stderr
    assert panel.count("add") == 6
    assert_one_order_per_row(panel)

    # The user lists the unknown rows, finds them on the panel and resolves them.
    listed = run_airflow(env, "dags", "test", "mirpanel_resolve_orders", "-c", json.dumps(conf))
    assert "2 of unknown outcome left: " in listed.stdout + listed.stderr
    found = {key: order_of(panel, key) for key in LOST}
    run_airflow(env, "dags", "test", "mirpanel_resolve_orders", "-c", json.dumps({**conf, "resolutions": found}))

    # Run 3: nothing bought; every row in the warehouse with the panel's order ID.
    third = dags_test(env, "mirpanel_campaign", conf)
    assert third.returncode == 0, third.stdout[-4000:]
    assert panel.count("add") == 6
    assert_one_order_per_row(panel)
    assert warehouse_orders(env, "lost_replies") == {row["key"]: order_of(panel, row["key"]) for row in CAMPAIGN}


def test_a_killed_run_then_a_new_run_buys_nothing_twice(panel: SandboxPanel, env: dict[str, str]) -> None:
    """place_orders is killed (with its whole dags-test process) while all six adds are in flight."""
    panel.faults.add("add", "delay_after_processing", seconds=120, times=None)
    conf = {"campaign": "killed"}
    run = subprocess.Popen(
        [AIRFLOW, "dags", "test", "mirpanel_campaign", "-c", json.dumps(conf)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while len(panel.state.orders) < len(CAMPAIGN) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(panel.state.orders) == len(CAMPAIGN), "every add reached the panel before the kill"
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    panel.faults.clear()
    assert_one_order_per_row(panel)

    again = dags_test(env, "mirpanel_campaign", conf)

    assert again.returncode != 0
    output = again.stdout + again.stderr
    assert "6 orders may exist on the panel" in output and "the try ended between sending it" in output
    assert panel.count("add") == 6, "a new run sends none of the rows a killed run had sent"
    assert_one_order_per_row(panel)

    skipped = dags_test(env, "mirpanel_campaign", {**conf, "on_unknown": "skip"})
    assert skipped.returncode == 0, skipped.stdout[-4000:]
    assert panel.count("add") == 6
