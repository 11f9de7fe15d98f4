"""The MirPanel page (issue 22) through FastAPI's TestClient on a real Airflow metadata DB (SQLite).

The rows are written as Airflow writes them: assets, state-store values through Airflow's state backend
(with the writing task recorded), asset events, a balance watch's trigger. Tokens are JWTs of Airflow's
simple auth manager; a subclass of it that denies stands for a deployment's restrictive one.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import support.mirpanel_page_db as db
from support.airflow_compat import needs_state_stores

from airflow_provider_mirpanel.placement.ledger import PAGE_SIZE, LedgerEntry, LedgerState
from airflow_provider_mirpanel.version_compat import STATE_STORES

CONN = "mirpanel_default"
NOW = time.time()
#: A lease held for a year: the page judges "held" by the wall clock, and a test must not depend on how long
#: the suite ran before it.
HELD_FOR = 365 * 86400.0


def page_rows(scope_rows: list[tuple[str, str, float | None]]) -> list[list[Any]]:
    """Ledger page rows ``[key, state, digest, order, cost, error]`` of ``(key, state, cost)``."""
    return [
        LedgerEntry(
            LedgerState(state),
            "d1g3st",
            1000 + n if state == "placed" else None,
            cost,
            "ReadTimeout: reply lost" if state == "unknown" else None,
        ).row(key)
        for n, (key, state, cost) in enumerate(scope_rows)
    ]


def write_scope(
    ledger: int,
    scope: str,
    pages: list[list[list[Any]]],
    dag_id: str = "mirpanel_campaign",
    run_id: str = "run_1",
    at: datetime | None = None,
) -> None:
    from urllib.parse import quote

    for number, rows in enumerate(pages):
        db.set_state(
            ledger, f"mirpanel.ledger.{quote(scope, safe='')}.{number}", rows, dag_id=dag_id, run_id=run_id, at=at
        )


def lease(dag_id: str, run_id: str, renewed: float, expires: float, released: float | None = None) -> dict[str, Any]:
    return {
        "owner": {"dag_id": dag_id, "run_id": run_id, "task_id": "place_orders", "map_index": -1},
        "token": "t0k3n",
        "taken_at": renewed - 60,
        "renewed_at": renewed,
        "expires": expires,
        "released_at": released,
    }


def build_scenario() -> dict[str, int]:
    """Two connections' assets; campaigns with placed, refused and unknown rows; histories; events."""
    ids = {
        "ledger": db.add_asset(f"mirpanel_order_ledger__{CONN}", f"mirpanel://{CONN}/order-ledger"),
        "balance": db.add_asset(f"mirpanel_balance__{CONN}", f"mirpanel://{CONN}/balance"),
        "low": db.add_asset("mirpanel_balance_low", "mirpanel_balance_low"),
        "placed": db.add_asset("mirpanel_campaign_placed", "mirpanel_campaign_placed"),
        "finished": db.add_asset("mirpanel_campaign_finished", "mirpanel_campaign_finished"),
        "other_ledger": db.add_asset("mirpanel_order_ledger__panel_b", "mirpanel://panel_b/order-ledger"),
        "orphan": db.add_asset("mirpanel_balance_orphan", "mirpanel_balance_orphan"),
    }
    if STATE_STORES:
        sending = page_rows([(f"bf-{n}", "sending", None) for n in range(5)])
        outcome = page_rows(
            [("bf-0", "placed", 0.5), ("bf-1", "placed", 0.25), ("bf-2", "refused", None), ("bf-3", "unknown", None)]
        )  # bf-4: still "sending" (the try died)
        write_scope(
            ids["ledger"],
            "black_friday",
            [sending, outcome],
            run_id="manual__bf",
            at=datetime.now(timezone.utc) - timedelta(hours=2),
        )
        db.set_state(
            ids["ledger"],
            "mirpanel.ledger.black_friday.lease",
            lease("mirpanel_campaign", "manual__bf_again", NOW - 30, NOW + HELD_FOR),
        )
        write_scope(
            ids["ledger"],
            "spring launch",
            [page_rows([("s-1", "placed", 1.0)])],
            run_id="manual__spring",
            at=datetime.now(timezone.utc) - timedelta(days=1),
        )
        db.set_state(
            ids["ledger"],
            "mirpanel.ledger.spring%20launch.lease",
            lease("mirpanel_campaign", "manual__spring", NOW - 3600, 0, released=NOW - 3500),
        )
        write_scope(
            ids["ledger"],
            "<script>alert(1)</script>",
            [page_rows([("<script>alert(2)</script>", "unknown", None)])],
            dag_id="csv_import",
        )
        # keys of other formats in the ledger's asset: not pages, not a lease
        db.set_state(ids["ledger"], "mirpanel.ledger.black_friday.summary", {"v": 2})
        db.set_state(ids["ledger"], "mirpanel.ledger.black_friday.007", [["x", "placed", "d", 1, 99.0, None]])
        db.set_state(ids["ledger"], "something.else", 1)
        db.set_state(
            ids["other_ledger"],
            "mirpanel.ledger.b_campaign.0",
            page_rows([("b-1", "placed", 2.0)]),
            dag_id="panel_b_dag",
        )
        db.set_state(
            ids["balance"],
            "balance_history",
            [[NOW - 600 - 3600 * hours, 100.0 + 2 * hours] for hours in range(12, -1, -1)],
        )
        from airflow_provider_mirpanel.triggers.balance import BalanceTrigger, WatchState

        trigger = BalanceTrigger(min_balance=95, runs_out_within_hours=24)
        db.add_watcher(ids["low"], *trigger.serialize())
        from airflow_provider_mirpanel.balance.spending import BalanceHistory

        history = BalanceHistory(tuple((NOW - 1800 * n, 90.0 + n) for n in range(6, -1, -1)))
        db.set_state(ids["low"], trigger.state_key, WatchState(low=True, history=history).to_json(), dag_id=None)
        # the state of a watch whose DAG was paused: its watcher (and the trigger's arguments) are gone
        db.set_state(
            ids["orphan"],
            "mirpanel_balance_watch.0123456789abcdef",
            WatchState(history=BalanceHistory(((NOW - 7200, 55.0),))).to_json(),
            dag_id=None,
        )
    for run, statuses in (("manual__bf", {"Completed": 1, "Partial": 1}), ("manual__spring", {"Completed": 1})):
        scope = "black_friday" if run == "manual__bf" else "spring launch"
        db.add_event(
            ids["placed"],
            {
                "stage": "placed",
                "campaign": scope,
                "orders": 2,
                "states": {"placed": 2},
                "spend": 0.75,
                "ledger_scope": scope,
                "mirpanel_conn_id": CONN,
            },
            run_id=run,
            task_id="place_orders",
        )
        db.add_event(
            ids["finished"],
            {"stage": "finished", "campaign": scope, "orders": 2, "statuses": statuses, "spend": 0.7, "remains": 0},
            run_id=run,
        )
    # an event of an earlier release (no ledger_scope): matched by its campaign name; another asset's event
    db.add_event(
        ids["finished"],
        {
            "stage": "finished",
            "campaign": "old_campaign",
            "orders": 1,
            "statuses": {"Canceled": 1},
            "spend": 0,
            "remains": 10,
        },
        run_id="manual__old",
        at=datetime.now(timezone.utc) - timedelta(days=3),
    )
    db.add_event(ids["low"], {"payload": {"kind": "low"}})
    return ids


class DenyingAuthManager:
    """Airflow's simple auth manager, denying what ``deny`` names: "view", or DAG ids and asset ids."""

    def __new__(cls, deny: set[Any]) -> Any:
        from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

        class Denying(SimpleAuthManager):
            def is_authorized_view(self, *, access_view: Any, user: Any) -> bool:
                return "view" not in deny and bool(super().is_authorized_view(access_view=access_view, user=user))

            def is_authorized_dag(
                self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
            ) -> bool:
                return getattr(details, "id", None) not in deny

            def is_authorized_asset(self, *, method: Any, user: Any, details: Any = None) -> bool:
                return f"asset:{getattr(details, 'id', None)}" not in deny

        return Denying()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """The metadata DB with the scenario's rows; the simple auth manager as the api-server's."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    with db.metadata_db(tmp_path_factory.mktemp("airflow-home")), db.auth_manager(SimpleAuthManager()):
        yield build_scenario()


@pytest.fixture(scope="module")
def client(airflow: dict[str, int]) -> Any:
    from fastapi.testclient import TestClient

    from airflow_provider_mirpanel.plugins.app import create_app

    return TestClient(create_app(), root_path="/mirpanel")


def get(client: Any, path: str = "/", manager: Any = None, **params: Any) -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    headers = {"Authorization": f"Bearer {db.token(manager or get_auth_manager())}"}
    if manager is None:
        return client.get(path, headers=headers, params=params)
    with db.auth_manager(manager):
        return client.get(path, headers=headers, params=params)


def text_of(page: str) -> str:
    """The page's visible text, one space between words."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


# -- protection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/data.json"])
def test_no_token_is_401_and_a_bad_token_403(client: Any, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403


@pytest.mark.parametrize("path", ["/", "/data.json"])
def test_a_user_the_auth_manager_denies_the_view_gets_403(client: Any, path: str) -> None:
    reply = get(client, path, DenyingAuthManager({"view"}))
    assert reply.status_code == 403
    assert "black_friday" not in reply.text


def test_the_uis_cookie_is_a_token_too(client: Any) -> None:
    from airflow.api_fastapi.app import get_auth_manager

    client.cookies.set("_token", db.token(get_auth_manager()))
    try:
        assert client.get("/").status_code == 200
    finally:
        client.cookies.clear()


def test_read_only_no_route_writes(client: Any) -> None:
    from airflow.api_fastapi.app import get_auth_manager

    headers = {"Authorization": f"Bearer {db.token(get_auth_manager())}"}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/", headers=headers).status_code == 405
        assert client.request(method, "/data.json", headers=headers).status_code == 405


def test_the_page_forbids_scripts_and_other_frames(client: Any) -> None:
    reply = get(client)
    assert reply.status_code == 200
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'self'" in policy and "script-src" not in policy
    assert "<script" not in reply.text.lower().replace("&lt;script", "")
    assert re.fullmatch(r"page;dur=\d+\.\d", reply.headers["server-timing"])  # what make bench-deployment reads


# -- content --------------------------------------------------------------------------------------


@needs_state_stores
def test_campaigns_show_ledger_counts_spend_writer_and_status_mix(client: Any) -> None:
    data = get(client, "/data.json").json()
    campaigns = {(c["conn_id"], c["scope"]): c for c in data["campaigns"]["items"]}
    bf = campaigns[(CONN, "black_friday")]
    # pages 0-1 only (the ledger stops at the first missing page: ".007" is not page 7); bf-4 still "sending"
    assert (bf["placed"], bf["refused"], bf["unknown"], bf["spend"]) == (2, 1, 2, 0.75)
    assert bf["held"] is True and bf["ledger_pages"] == 2
    assert bf["last_written"]["source"] == "lease" and bf["last_written"]["run_id"] == "manual__bf_again"
    assert bf["last_written"]["url"] == "/dags/mirpanel_campaign/runs/manual__bf_again"
    assert bf["statuses"] == {"Completed": 1, "Partial": 1} and bf["finished_runs"] == 1
    spring = campaigns[(CONN, "spring launch")]
    assert spring["held"] is False and spring["last_written"]["source"] == "lease"
    assert (spring["placed"], spring["unknown"], spring["spend"]) == (1, 0, 1.0)
    b = campaigns[("panel_b", "b_campaign")]
    assert b["last_written"]["source"] == "state store" and b["last_written"]["dag_id"] == "panel_b_dag"
    old = campaigns[(None, "old_campaign")]  # known from an event only
    assert old["counted"] is False and old["statuses"] == {"Canceled": 1}
    # held first, then the most recently written
    assert data["campaigns"]["items"][0]["scope"] == "black_friday"


@needs_state_stores
def test_unknown_orders_with_their_resolution(client: Any) -> None:
    data = get(client, "/data.json").json()
    unknown = {(o["scope"], o["key"]): o for o in data["unknown_orders"]["items"]}
    assert set(unknown) == {
        ("black_friday", "bf-3"),
        ("black_friday", "bf-4"),
        ("<script>alert(1)</script>", "<script>alert(2)</script>"),
    }
    assert unknown[("black_friday", "bf-3")]["state"] == "unknown"
    assert unknown[("black_friday", "bf-4")]["state"] == "sending"
    page = get(client).text
    text = text_of(page)
    assert "Orders of unknown outcome (3 in the campaigns above)" in text
    [conf] = [
        json.loads(html.unescape(block))
        for block in re.findall(r"<pre>(.*?)</pre>", page, re.S)
        if "black_friday" in block
    ]
    assert conf == {
        "campaign": "black_friday",
        "resolutions": {"bf-3": "ORDER_ID or not_placed", "bf-4": "ORDER_ID or not_placed"},
    }
    assert 'href="/dags/mirpanel_resolve_orders"' in page


@needs_state_stores
def test_balance_histories_and_the_alerts_numbers(client: Any) -> None:
    from airflow_provider_mirpanel.balance.spending import spend_rate

    data = get(client, "/data.json").json()
    conn = next(c for c in data["connections"] if c["conn_id"] == CONN)
    check = next(h for h in conn["histories"] if h["source"] == "balance check")
    watch = next(h for h in conn["histories"] if h["source"] == "balance watch")
    assert len(check["readings"]) == 13 and check["readings"][-1]["balance"] == 100.0
    assert check["projection"]["spend_rate_per_hour"] == pytest.approx(2.0)
    assert check["projection"]["hours_left"] == pytest.approx(50.0)
    assert watch["asset"] == "mirpanel_balance_low" and watch["min_balance"] == 95 and watch["low"] is True
    readings = [(NOW - 1800 * n, 90.0 + n) for n in range(6, -1, -1)]
    assert watch["projection"]["spend_rate_per_hour"] == pytest.approx(spend_rate(readings), rel=1e-6)
    assert conn["latest"]["balance"] == 90.0 and conn["latest"]["source"] == "balance watch"
    [orphan] = [c for c in data["connections"] if c["conn_id"] is None]
    assert data["connections"][-1] is orphan and orphan["latest"]["balance"] == 55.0  # listed last
    [history] = orphan["histories"]
    assert history["asset"] == "mirpanel_balance_orphan" and history["min_balance"] is None
    text = text_of(get(client).text)
    assert "Connection not known A balance watch's readings whose watcher is gone" in text
    assert "balance 90.00 is below the threshold 95.00" in text
    assert "Balance check — readings kept in the state store of asset mirpanel_balance__mirpanel_default" in text


def test_spend_per_day_from_placed_events(client: Any) -> None:
    data = get(client, "/data.json").json()
    conn = next(c for c in data["connections"] if c["conn_id"] == CONN)
    days = conn["spend_per_day"]
    assert len(days) == 30 and days[-1]["day"] == data["generated_at"][:10]  # the day the page was made
    assert sum(day["spend"] for day in days) == pytest.approx(1.5)


def test_the_page_never_shows_a_connections_secret(client: Any) -> None:
    # the page reads no connection: the sandbox's API key set as mirpanel_default cannot appear
    page = get(client).text + get(client, "/data.json").text
    assert "password" not in page.lower() and "api_key" not in page.lower()


# -- escaping and links ---------------------------------------------------------------------------


@needs_state_stores
def test_user_text_is_escaped_never_markup(client: Any) -> None:
    page = get(client).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "<script>alert(2)</script>" in text_of(page)


def test_only_http_links_are_clickable() -> None:
    from airflow_provider_mirpanel.plugins.render import safe_href

    assert safe_href("https://instagram.com/p/1") == "https://instagram.com/p/1"
    assert safe_href(" http://t.me/x ") == "http://t.me/x"
    for link in (
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<b>",
        "//evil.example/x",
        "vbscript:x",
        "/relative",
        "https://",
        None,
        42,
        "java\nscript:alert(1)",
    ):
        assert safe_href(link) is None, link


@needs_state_stores
def test_unknown_orders_links_are_clickable_only_when_http(airflow: dict[str, int]) -> None:
    from airflow_provider_mirpanel.plugins.gather import UnknownOrder
    from airflow_provider_mirpanel.plugins.render import Links, render_page

    page = render_page(
        _data(
            [
                UnknownOrder(CONN, "s", "k1", "unknown", None, None, 8094, "https://ig.example/p/1"),
                UnknownOrder(CONN, "s", "k2", "unknown", None, None, 8094, "javascript:alert(1)"),
            ]
        ),
        Links("", "/mirpanel"),
    )
    assert '<a href="https://ig.example/p/1"' in page
    assert 'href="javascript' not in page and "javascript:alert(1)" in page


def _data(unknown: list[Any]) -> Any:
    from airflow_provider_mirpanel.plugins.gather import PageData

    return PageData("3.3.2", True, datetime.now(timezone.utc), [], [], 0, 1, 1, unknown, len(unknown), 1, 1, [])


# -- who sees what --------------------------------------------------------------------------------


@needs_state_stores
def test_a_campaign_shows_only_to_who_may_read_its_runs_or_its_asset(client: Any, airflow: dict[str, int]) -> None:
    denied_assets = {f"asset:{asset_id}" for asset_id in airflow.values()}
    # may read mirpanel_campaign's runs, no asset: the campaigns it wrote, no balance, not csv_import's or panel_b's
    data = get(client, "/data.json", DenyingAuthManager({"csv_import", "panel_b_dag", *denied_assets})).json()
    scopes = {c["scope"] for c in data["campaigns"]["items"]}
    assert scopes == {"black_friday", "spring launch", "old_campaign"}
    assert data["campaigns"]["total"] == 3  # the others are not counted either
    assert "csv_import" not in json.dumps(data) and "panel_b_dag" not in json.dumps(data)
    assert {o["key"] for o in data["unknown_orders"]["items"]} == {"bf-3", "bf-4"}
    assert all(not c["histories"] for c in data["connections"])
    # may read the ledger asset of panel_b only: its campaign, whatever DAG wrote it
    only_b = denied_assets - {f"asset:{airflow['other_ledger']}"}
    data = get(
        client, "/data.json", DenyingAuthManager({"mirpanel_campaign", "csv_import", "panel_b_dag", *only_b})
    ).json()
    assert {c["scope"] for c in data["campaigns"]["items"]} == {"b_campaign"}


# -- paging and empty states ----------------------------------------------------------------------


@needs_state_stores
def test_many_campaigns_and_unknown_orders_are_paged(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from airflow_provider_mirpanel.plugins.app import create_app

    with db.metadata_db(tmp_path):
        ledger = db.add_asset("mirpanel_order_ledger__paged", "mirpanel://paged/order-ledger")
        start = datetime.now(timezone.utc) - timedelta(days=1)
        for n in range(45):
            rows = page_rows([(f"c{n}-k{i}", "unknown" if n == 0 else "placed", 0.01) for i in range(PAGE_SIZE)])
            write_scope(ledger, f"campaign-{n:02d}", [rows, rows[:10]], at=start + timedelta(minutes=n))
        client = TestClient(create_app(), root_path="/mirpanel")
        first = get(client, "/data.json").json()
        assert (first["campaigns"]["total"], first["campaigns"]["pages"]) == (45, 3)
        assert [c["scope"] for c in first["campaigns"]["items"]][:2] == ["campaign-44", "campaign-43"]
        last = get(client, "/data.json", page=3).json()
        assert [c["scope"] for c in last["campaigns"]["items"]] == [f"campaign-{n:02d}" for n in range(4, -1, -1)]
        assert last["unknown_orders"]["total"] == PAGE_SIZE and last["unknown_orders"]["pages"] == 2
        second = get(client, "/data.json", page=3, unknown_page=2).json()
        assert len(second["unknown_orders"]["items"]) == PAGE_SIZE - 50
        page = get(client, page=3).text
        assert "page 3 of 3" in page and 'href="/mirpanel/?page=2"' in page
        assert 'href="/mirpanel/?page=3&amp;unknown_page=2"' in page
        assert get(client, "/data.json", page=99).json()["campaigns"]["page"] == 3
        everything = get(client, "/data.json", per_page=100).json()["campaigns"]
        assert (everything["pages"], len(everything["items"])) == (1, 45)
        assert 'href="/mirpanel/?page=2&amp;per_page=10"' in get(client, per_page=10).text
        assert get(client, per_page=101).status_code == 422


def test_an_empty_airflow_says_so(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from airflow_provider_mirpanel.plugins.app import create_app

    with db.metadata_db(tmp_path):
        db.add_asset(f"mirpanel_balance__{CONN}", f"mirpanel://{CONN}/balance")
        client = TestClient(create_app(), root_path="/mirpanel")
        reply = get(client)
        text = text_of(reply.text)
        assert reply.status_code == 200
        assert "No campaign yet" in text
        if STATE_STORES:
            assert "no readings yet" in text and "No balance reading is stored for this history yet" in text
            assert "nothing placed in the last 30 days" in text
        else:
            assert "need Airflow 3.3" in text or "needs Airflow 3.3" in text


@pytest.mark.skipif(STATE_STORES, reason="Airflow 3.1/3.2 only: no state stores")
def test_airflow_without_state_stores_shows_the_events_and_names_what_needs_3_3(client: Any) -> None:
    data = get(client, "/data.json").json()
    assert data["state_stores"] is False and "need Airflow 3.3" in data["notes"][0]
    campaigns = {c["scope"]: c for c in data["campaigns"]["items"]}
    assert campaigns["black_friday"]["statuses"] == {"Completed": 1, "Partial": 1}
    assert campaigns["black_friday"]["counted"] is False
    text = text_of(get(client).text)
    assert "ledger needs Airflow 3.3" in text and "asset state stores: Airflow 3.3+" in text
