"""What the MirPanel page shows, read from Airflow's metadata DB (the api-server never calls the panel).

Per panel connection:

- **balance**: the readings :class:`~airflow_provider_mirpanel.operators.mirpanel.BalanceCheckOperator`
  keeps in the state store of the connection's balance asset (``mirpanel_balance__<conn>``, key
  ``balance_history``), and those every :class:`~airflow_provider_mirpanel.triggers.balance.BalanceTrigger`
  keeps in its watched asset's state store (key ``mirpanel_balance_watch.<digest>``), each judged by
  :func:`~airflow_provider_mirpanel.spending.assess` as the alert judged its latest stored reading;
- **spend per day**: the ``spend`` of the campaigns' ``placed`` asset events, per UTC day;
- **campaigns** (ledger scopes): the pages of the connection's ledger asset
  (``mirpanel_order_ledger__<conn>``), the scope's lease, and the campaign asset events matched to it
  (:func:`event_scope`);
- **orders of unknown outcome** of the campaigns shown.

The page lists every scope from the keys' names and dates (no values); only the pages of the campaigns
on the page being shown are read, so a request costs the ledger pages it shows, not every order.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Text, cast, select, tuple_
from sqlalchemy.orm import Session

from airflow_provider_mirpanel.assets.events import STAGES
from airflow_provider_mirpanel.balance.spending import BalanceHistory, Projection, assess
from airflow_provider_mirpanel.operators.mirpanel import HISTORY_KEY
from airflow_provider_mirpanel.operators.orders import UNKNOWN_ORDERS_XCOM_KEY
from airflow_provider_mirpanel.placement.lease import Lease
from airflow_provider_mirpanel.placement.ledger import LedgerEntry, LedgerState
from airflow_provider_mirpanel.plugins.access import Access
from airflow_provider_mirpanel.plugins.ledger_keys import parse_key
from airflow_provider_mirpanel.triggers.balance import WatchState
from airflow_provider_mirpanel.utils.airflow_lines import airflow_line
from airflow_provider_mirpanel.utils.state_stores import digest
from airflow_provider_mirpanel.version_compat import STATE_STORES

LEDGER_ASSET_PREFIX = "mirpanel_order_ledger__"
BALANCE_ASSET_PREFIX = "mirpanel_balance__"
WATCH_KEY_PREFIX = "mirpanel_balance_watch."

#: Days of spend per day shown.
SPEND_DAYS = 30
#: Campaign events read (the most recent first): a campaign older than this many events shows no mix.
MAX_EVENTS = 20_000
CAMPAIGNS_PER_PAGE = 20
UNKNOWN_PER_PAGE = 50


@dataclass
class Writer:
    """Who last wrote a campaign's ledger, and when (``source``: the lease, or the state store row)."""

    dag_id: str | None
    run_id: str | None
    task_id: str | None
    at: datetime | None
    source: str


@dataclass
class UnknownOrder:
    """An order of unknown outcome: the panel may hold it, nobody recorded whether it does."""

    conn_id: str
    scope: str
    key: str
    state: str
    at: datetime | None
    error: str | None
    service: Any = None
    link: str | None = None


@dataclass
class Campaign:
    """A ledger scope (and the campaign events matched to it)."""

    conn_id: str | None
    scope: str
    ledger_asset_id: int | None = None
    pages: int = 0
    counted: bool = False  # whether the ledger's pages were read (the campaigns on the page shown)
    placed: int | None = None
    refused: int | None = None
    unknown: int | None = None
    spend: float | None = None
    last_written: Writer | None = None
    held: bool | None = None  # a placement holds the scope's lease now (None: no lease)
    statuses: dict[str, int] = field(default_factory=dict)
    event_runs: int = 0
    event_spend: float | None = None
    dag_ids: set[str] = field(default_factory=set)
    asset_ids: set[int] = field(default_factory=set)
    _page_times: dict[int, datetime] = field(default_factory=dict, repr=False)

    @property
    def resolve_conf(self) -> dict[str, Any]:
        """The ``mirpanel_resolve_orders`` conf that lists this campaign's unknown orders."""
        return {"campaign": self.scope, "resolutions": {}}


@dataclass
class BalanceChart:
    """One balance history: its readings, the thresholds known, and the alert's numbers at its last reading."""

    source: str  # "balance check" or "balance watch"
    asset_name: str
    samples: list[tuple[float, float]]
    updated_at: datetime | None
    min_balance: float | None = None
    runs_out_within_hours: float | None = None
    low: bool | None = None
    projection: Projection | None = None


@dataclass
class ConnectionView:
    """What the page shows of one panel connection."""

    conn_id: str
    charts: list[BalanceChart] = field(default_factory=list)
    spend_per_day: list[tuple[date, float]] = field(default_factory=list)

    @property
    def latest(self) -> tuple[float, float, str] | None:
        """The latest stored reading of any of its histories: ``(epoch, balance, source)``."""
        readings = [
            (chart.samples[-1][0], chart.samples[-1][1], chart.source) for chart in self.charts if chart.samples
        ]
        return max(readings) if readings else None

    @property
    def latest_chart(self) -> BalanceChart | None:
        """The history with the latest reading (its judgement is the connection's spend rate and run-out)."""
        judged = [chart for chart in self.charts if chart.samples and chart.projection is not None]
        return max(judged, key=lambda chart: chart.samples[-1][0]) if judged else None


@dataclass
class PageData:
    """Everything the page (and its JSON twin) shows to one user."""

    airflow_version: str
    state_stores: bool
    generated_at: datetime
    connections: list[ConnectionView]
    campaigns: list[Campaign]
    campaign_total: int
    page: int
    pages: int
    unknown: list[UnknownOrder]
    unknown_total: int
    unknown_page: int
    unknown_pages: int
    notes: list[str]


def event_scope(extra: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """Return the ``(connection or None, scope)`` a campaign asset event belongs to; None for other events.

    A campaign event has ``stage`` ``placed`` or ``finished``. Its scope is its ``ledger_scope`` (written by
    :class:`~airflow_provider_mirpanel.assets.CampaignAssetEvent` for a task with a ``ledger_scope``),
    else its ``campaign`` (events of earlier releases, and of tasks without a scope: the example DAG names
    both after ``params.campaign``). Its connection is its ``mirpanel_conn_id`` when it has one.
    """
    if not isinstance(extra, Mapping) or extra.get("stage") not in STAGES:
        return None
    scope = extra.get("ledger_scope") or extra.get("campaign")
    if not isinstance(scope, str) or not scope:
        return None
    conn = extra.get("mirpanel_conn_id")
    return (conn if isinstance(conn, str) and conn else None), scope


def gather(
    session: Session,
    access: Access,
    page: int = 1,
    unknown_page: int = 1,
    per_page: int = CAMPAIGNS_PER_PAGE,
    now: float | None = None,
) -> PageData:
    """Return what ``access``'s user may see, the campaigns of page ``page`` counted from their ledger pages."""
    now = time.time() if now is None else now
    generated = datetime.fromtimestamp(now, timezone.utc)
    notes: list[str] = []
    assets = _mirpanel_assets(session)
    ledger_assets = {
        conn: asset_id for asset_id, name in assets.items() if (conn := _suffix(name, LEDGER_ASSET_PREFIX)) is not None
    }
    campaigns: dict[tuple[str | None, str], Campaign] = {}
    leases: dict[tuple[str | None, str], Lease] = {}
    if STATE_STORES:
        _ledger_scopes(session, ledger_assets, campaigns, leases, now)
    else:
        notes.append(
            f"Airflow {airflow_line()} has no state stores (Airflow 3.3+): the campaigns' ledgers "
            "(rows placed, refused, unknown; spend; the lease), the orders of unknown outcome and the "
            "balance histories need Airflow 3.3. Shown here: what the campaign asset events say."
        )
    events = _campaign_events(session, campaigns, now)
    visible = [campaign for campaign in campaigns.values() if access.may_see_campaign(campaign)]
    visible.sort(key=lambda c: (not c.held, -_epoch(c.last_written.at if c.last_written else None), c.scope))
    pages = max(1, -(-len(visible) // per_page))
    page = min(max(1, page), pages)
    shown = visible[(page - 1) * per_page : page * per_page]
    unknown: list[UnknownOrder] = []
    if STATE_STORES:
        unknown = _count(session, shown)
        _unknown_details(session, shown, unknown)
    unknown_pages = max(1, -(-len(unknown) // UNKNOWN_PER_PAGE))
    unknown_page = min(max(1, unknown_page), unknown_pages)
    connections = _connections(session, assets, access, visible, events, now)
    return PageData(
        airflow_line(),
        STATE_STORES,
        generated,
        connections,
        shown,
        len(visible),
        page,
        pages,
        unknown[(unknown_page - 1) * UNKNOWN_PER_PAGE : unknown_page * UNKNOWN_PER_PAGE],
        len(unknown),
        unknown_page,
        unknown_pages,
        notes,
    )


# -- assets and the ledger ------------------------------------------------------------------------


def _mirpanel_assets(session: Session) -> dict[int, str]:
    from airflow.models.asset import AssetModel

    rows = session.execute(
        select(AssetModel.id, AssetModel.name).where(
            AssetModel.name.startswith(LEDGER_ASSET_PREFIX, autoescape=True)
            | AssetModel.name.startswith(BALANCE_ASSET_PREFIX, autoescape=True)
        )
    )
    return {asset_id: name for asset_id, name in rows}


def _suffix(name: str, prefix: str) -> str | None:
    return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None


def _ledger_scopes(
    session: Session,
    ledger_assets: Mapping[str, int],
    campaigns: dict[tuple[str | None, str], Campaign],
    leases: dict[tuple[str | None, str], Lease],
    now: float,
) -> None:
    """Every scope of every ledger asset, from its keys' names and dates; the leases' values."""
    from airflow.models.asset_state_store import AssetStateStoreModel as Row

    from airflow_provider_mirpanel.placement.ledger import PAGE_PREFIX

    conn_of = {asset_id: conn for conn, asset_id in ledger_assets.items()}
    if not conn_of:
        return
    rows = session.execute(
        select(
            Row.asset_id,
            Row.key,
            Row.updated_at,
            Row.last_updated_by_dag_id,
            Row.last_updated_by_run_id,
            Row.last_updated_by_task_id,
        ).where(Row.asset_id.in_(conn_of), Row.key.startswith(PAGE_PREFIX, autoescape=True))
    )
    lease_keys: list[tuple[int, str]] = []
    for asset_id, key, updated_at, dag_id, run_id, task_id in rows:
        parsed = parse_key(key)
        if parsed is None:
            continue
        conn = conn_of[asset_id]
        campaign = campaigns.setdefault((conn, parsed.scope), Campaign(conn, parsed.scope, asset_id))
        campaign.asset_ids.add(asset_id)
        if dag_id:
            campaign.dag_ids.add(dag_id)
        if parsed.is_lease:
            lease_keys.append((asset_id, key))
            continue
        campaign._page_times[parsed.page or 0] = updated_at
        latest = campaign.last_written
        if latest is None or latest.at is None or (updated_at is not None and updated_at > latest.at):
            campaign.last_written = Writer(dag_id, run_id, task_id, updated_at, "state store")
    for campaign in campaigns.values():
        campaign.pages = _contiguous(campaign._page_times)
    if lease_keys:
        values = session.execute(
            select(Row.asset_id, Row.key, Row.value).where(tuple_(Row.asset_id, Row.key).in_(lease_keys))
        )
        for asset_id, key, value in values:
            parsed = parse_key(key)
            lease = Lease.from_json(_json(value))
            if parsed is None or lease is None:
                continue
            campaign = campaigns[(conn_of[asset_id], parsed.scope)]
            leases[(campaign.conn_id, campaign.scope)] = lease
            campaign.held = lease.held(now)
            campaign.dag_ids.add(lease.owner.dag_id)
            campaign.last_written = Writer(
                lease.owner.dag_id,
                lease.owner.run_id,
                lease.owner.task_id,
                datetime.fromtimestamp(lease.last_written, timezone.utc),
                "lease",
            )


def _contiguous(page_times: Mapping[int, Any]) -> int:
    """Pages 0..n-1 as the ledger reads them (it stops at the first missing page)."""
    count = 0
    while count in page_times:
        count += 1
    return count


def _count(session: Session, shown: list[Campaign]) -> list[UnknownOrder]:
    """Read the ledger pages of ``shown`` (one query per connection); count; their unknown orders."""
    from airflow.models.asset_state_store import AssetStateStoreModel as Row

    from airflow_provider_mirpanel.placement.ledger import PAGE_PREFIX

    wanted: dict[int, dict[str, tuple[Campaign, int]]] = defaultdict(dict)
    for campaign in shown:
        if campaign.ledger_asset_id is None:
            continue
        quoted = _quoted(campaign.scope)
        for number in range(campaign.pages):
            wanted[campaign.ledger_asset_id][f"{PAGE_PREFIX}{quoted}.{number}"] = (campaign, number)
    values: dict[tuple[int, int], dict[int, Any]] = defaultdict(dict)  # (asset, campaign) -> page -> rows
    for asset_id, keys in wanted.items():
        key_list = list(keys)
        for start in range(0, len(key_list), 500):
            rows = session.execute(
                select(Row.key, Row.value).where(Row.asset_id == asset_id, Row.key.in_(key_list[start : start + 500]))
            )
            for key, value in rows:
                campaign, number = keys[key]
                values[(asset_id, id(campaign))][number] = _json(value)
    unknown: list[UnknownOrder] = []
    for campaign in shown:
        if campaign.ledger_asset_id is None:
            continue
        entries = _fold(values.get((campaign.ledger_asset_id, id(campaign)), {}), campaign.pages)
        placed = refused = 0
        spend = 0.0
        for key, (entry, number) in reversed(entries.items()):  # in the order the ledger last wrote them
            if entry.state is LedgerState.PLACED:
                placed += 1
                spend += _number(entry.cost)
            elif entry.state is LedgerState.REFUSED:
                refused += 1
            else:
                unknown.append(
                    UnknownOrder(
                        campaign.conn_id or "",
                        campaign.scope,
                        key,
                        entry.state.value,
                        campaign._page_times.get(number),
                        entry.error,
                    )
                )
        campaign.counted = True
        campaign.placed, campaign.refused = placed, refused
        campaign.unknown = len(entries) - placed - refused
        campaign.spend = round(spend, 6)
    return unknown


def _fold(pages: Mapping[int, Any], count: int) -> dict[str, tuple[LedgerEntry, int]]:
    """Each key's latest entry (and its page) in pages ``0..count-1``, as ``PlacementLedger.load`` reads them.

    Read from the last row back: a key's first valid row met is its latest, and the earlier rows of a key
    already decided are not parsed (a ledger writes each key twice or more: marked, then its outcome).
    """
    entries: dict[str, tuple[LedgerEntry, int]] = {}
    for number in reversed(range(count)):
        rows = pages.get(number)
        for row in reversed(rows) if isinstance(rows, list) else ():
            if isinstance(row, list) and len(row) == 6 and str(row[0]) in entries:
                continue
            parsed = LedgerEntry.from_row(row)
            if parsed is not None:
                entries[parsed[0]] = (parsed[1], number)
    return entries


def _unknown_details(session: Session, shown: list[Campaign], unknown: list[UnknownOrder]) -> None:
    """Service and link of the unknown orders, from the XCom the placements that saw them left."""
    if not unknown:
        return
    from airflow.models.xcom import XComModel

    dag_ids = {dag_id for campaign in shown for dag_id in campaign.dag_ids}
    rows = session.execute(
        select(XComModel.value)
        .where(XComModel.key == UNKNOWN_ORDERS_XCOM_KEY, XComModel.dag_id.in_(dag_ids))
        .order_by(XComModel.timestamp.desc())
        .limit(200)
    )
    found: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for (value,) in rows:
        payload = _json(value)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("orders"), list):
            continue
        scope, conn = payload.get("ledger_scope"), payload.get("mirpanel_conn_id")
        if not isinstance(scope, str) or not isinstance(conn, str):
            continue
        for order in payload["orders"]:
            if isinstance(order, Mapping) and isinstance(order.get("key"), str):
                found.setdefault((conn, scope, order["key"]), order)  # newest first
    for item in unknown:
        detail = found.get((item.conn_id, item.scope, item.key))
        if detail is not None:
            item.service = detail.get("service") if isinstance(detail.get("service"), (int, str)) else None
            item.link = detail.get("link") if isinstance(detail.get("link"), str) else None


# -- campaign events ------------------------------------------------------------------------------


@dataclass
class _Event:
    asset_id: int
    at: datetime
    stage: str
    conn_id: str | None
    scope: str
    extra: Mapping[str, Any]
    dag_id: str | None
    run_id: str | None


def _campaign_events(session: Session, campaigns: dict[tuple[str | None, str], Campaign], now: float) -> list[_Event]:
    """Campaign events (newest first), matched to their campaigns; campaigns only events know are added."""
    from airflow.models.asset import AssetEvent

    rows = session.execute(
        select(
            AssetEvent.asset_id,
            AssetEvent.timestamp,
            AssetEvent.extra,
            AssetEvent.source_dag_id,
            AssetEvent.source_run_id,
        )
        .where(cast(AssetEvent.extra, Text).like('%"stage"%'))
        .order_by(AssetEvent.timestamp.desc())
        .limit(MAX_EVENTS)
    )
    events: list[_Event] = []
    for asset_id, at, extra, dag_id, run_id in rows:
        extra = _json(extra)
        matched = event_scope(extra) if isinstance(extra, Mapping) else None
        if matched is not None:
            events.append(_Event(asset_id, at, str(extra["stage"]), matched[0], matched[1], extra, dag_id, run_id))
    # an event naming its connection belongs to that connection's campaign (made when the ledger has none);
    # one without (earlier releases, 3.1/3.2) to every campaign of its scope, or to one of its own
    for event in events:
        if event.conn_id is not None and (event.conn_id, event.scope) not in campaigns:
            campaigns[(event.conn_id, event.scope)] = Campaign(event.conn_id, event.scope)
    by_scope: dict[str, list[Campaign]] = defaultdict(list)
    for campaign in campaigns.values():
        by_scope[campaign.scope].append(campaign)
    finished_runs: set[tuple[int, str | None, str | None, str | None]] = set()
    for event in events:
        conn, scope, extra, dag_id, run_id, at, asset_id = (
            event.conn_id,
            event.scope,
            event.extra,
            event.dag_id,
            event.run_id,
            event.at,
            event.asset_id,
        )
        targets = [c for c in by_scope.get(scope, []) if conn is None or c.conn_id == conn]
        if not targets:
            campaign = Campaign(None, scope)
            campaigns[(None, scope)] = campaign
            by_scope[scope].append(campaign)
            targets = [campaign]
        for campaign in targets:
            campaign.asset_ids.add(asset_id)
            if dag_id:
                campaign.dag_ids.add(dag_id)
            if campaign.last_written is None:
                campaign.last_written = Writer(dag_id, run_id, None, at, "asset event")
            if event.stage == "placed":
                campaign.event_spend = round((campaign.event_spend or 0.0) + _number(extra.get("spend")), 6)
            # one finished event per run (the newest): a cleared and rerun sensor reports the same orders again
            elif (run := (id(campaign), dag_id, run_id, scope)) not in finished_runs:
                finished_runs.add(run)
                campaign.event_runs += 1
                for status, count in (extra.get("statuses") or {}).items():
                    if isinstance(count, int) and not isinstance(count, bool):
                        campaign.statuses[str(status)] = campaign.statuses.get(str(status), 0) + count
    return events


# -- balance and spend ----------------------------------------------------------------------------


def _connections(
    session: Session,
    assets: Mapping[int, str],
    access: Access,
    visible: list[Campaign],
    events: list[_Event],
    now: float,
) -> list[ConnectionView]:
    views: dict[str, ConnectionView] = {}
    for asset_id, name in assets.items():
        for prefix in (LEDGER_ASSET_PREFIX, BALANCE_ASSET_PREFIX):
            conn = _suffix(name, prefix)
            if conn is not None and access.may_read_asset(asset_id):
                views.setdefault(conn, ConnectionView(conn))
    for campaign in visible:
        if campaign.conn_id:
            views.setdefault(campaign.conn_id, ConnectionView(campaign.conn_id))
    if STATE_STORES:
        _balance_checks(session, assets, access, views)
        _balance_watches(session, access, views)
    _spend_per_day(visible, events, views, now)
    return sorted(views.values(), key=lambda view: (not view.conn_id, view.conn_id))  # the unknown one last


def _balance_checks(
    session: Session, assets: Mapping[int, str], access: Access, views: dict[str, ConnectionView]
) -> None:
    from airflow.models.asset_state_store import AssetStateStoreModel as Row

    balance_assets = {
        asset_id: conn
        for asset_id, name in assets.items()
        if (conn := _suffix(name, BALANCE_ASSET_PREFIX)) is not None and access.may_read_asset(asset_id)
    }
    found: dict[int, tuple[Any, datetime]] = {}
    if balance_assets:
        rows = session.execute(
            select(Row.asset_id, Row.value, Row.updated_at).where(
                Row.asset_id.in_(balance_assets), Row.key == HISTORY_KEY
            )
        )
        found = {asset_id: (value, updated_at) for asset_id, value, updated_at in rows}
    for asset_id, conn in balance_assets.items():
        value, updated_at = found.get(asset_id, (None, None))
        history = BalanceHistory.from_json(_json(value))
        views.setdefault(conn, ConnectionView(conn)).charts.append(
            _chart("balance check", assets[asset_id], history, updated_at, None, None, None)
        )


def _balance_watches(session: Session, access: Access, views: dict[str, ConnectionView]) -> None:
    from airflow.models.asset import AssetModel, AssetWatcherModel
    from airflow.models.asset_state_store import AssetStateStoreModel as Row
    from airflow.models.trigger import Trigger

    rows = session.execute(
        select(Row.asset_id, Row.key, Row.value, Row.updated_at, AssetModel.name)
        .join(AssetModel, AssetModel.id == Row.asset_id)
        .where(Row.key.startswith(WATCH_KEY_PREFIX, autoescape=True))
    ).all()
    rows = [row for row in rows if access.may_read_asset(row[0])]
    if not rows:
        return
    watches: dict[tuple[int, str], dict[str, Any]] = {}
    triggers = session.execute(
        select(AssetWatcherModel.asset_id, Trigger)
        .join(Trigger, Trigger.id == AssetWatcherModel.trigger_id)
        .where(AssetWatcherModel.asset_id.in_({row[0] for row in rows}))
    ).all()
    for asset_id, trigger in triggers:
        if not str(trigger.classpath).endswith(".BalanceTrigger"):
            continue
        try:
            kwargs = dict(trigger.kwargs)
        except Exception:  # undecryptable (another fernet key) or unreadable: the watch shows without thresholds
            continue
        key = WATCH_KEY_PREFIX + digest(
            [kwargs.get("mirpanel_conn_id"), kwargs.get("min_balance"), kwargs.get("runs_out_within_hours")]
        )
        watches[(asset_id, key)] = kwargs
    for asset_id, key, value, updated_at, asset_name in rows:
        state = WatchState.from_json(_json(value))
        kwargs = watches.get((asset_id, key), {})
        conn = kwargs.get("mirpanel_conn_id")
        conn = conn if isinstance(conn, str) else ""  # its watcher is gone: the trigger's arguments with it
        views.setdefault(conn, ConnectionView(conn)).charts.append(
            _chart(
                "balance watch",
                asset_name,
                state.history,
                updated_at,
                _float(kwargs.get("min_balance")),
                _float(kwargs.get("runs_out_within_hours")),
                state.low,
            )
        )


def _chart(
    source: str,
    asset_name: str,
    history: BalanceHistory,
    updated_at: datetime | None,
    min_balance: float | None,
    within: float | None,
    low: bool | None,
) -> BalanceChart:
    """Return a history, and the alert's judgement of its last reading against the readings before it."""
    samples = list(history.samples)
    projection = None
    if samples:
        at, balance = samples[-1]
        projection = assess(
            BalanceHistory(tuple(samples[:-1])), {"balance": balance, "currency": ""}, at, min_balance, within
        )
    return BalanceChart(source, asset_name, samples, updated_at, min_balance, within, low, projection)


def _spend_per_day(visible: list[Campaign], events: list[_Event], views: dict[str, ConnectionView], now: float) -> None:
    """Per connection, the ``spend`` of the visible campaigns' ``placed`` events per UTC day, the last 30 days."""
    today = datetime.fromtimestamp(now, timezone.utc).date()
    first = today - timedelta(days=SPEND_DAYS - 1)
    seen = {(campaign.conn_id, campaign.scope) for campaign in visible}
    conns_of_scope: dict[str, set[str]] = defaultdict(set)
    for campaign in visible:
        if campaign.conn_id:
            conns_of_scope[campaign.scope].add(campaign.conn_id)
    totals: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        day = event.at.astimezone(timezone.utc).date()
        if event.stage != "placed" or day < first:
            continue
        conns = {event.conn_id} if event.conn_id else conns_of_scope.get(event.scope, set())
        for conn in conns:
            if (conn, event.scope) in seen or (event.conn_id is None and (None, event.scope) in seen):
                totals[conn][day] += _number(event.extra.get("spend"))
    for conn, view in views.items():
        view.spend_per_day = [
            (first + timedelta(days=n), round(totals[conn].get(first + timedelta(days=n), 0.0), 6))
            for n in range(SPEND_DAYS)
        ]


# -- small helpers --------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _quoted(scope: str) -> str:
    from urllib.parse import quote

    return quote(scope, safe="")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _epoch(at: datetime | None) -> float:
    return at.timestamp() if at is not None else 0.0


def unknown_rows(unknown: Iterable[UnknownOrder]) -> dict[str, dict[str, Any]]:
    """Return the resolutions to fill in, per scope: ``{scope: {key: "ORDER_ID or not_placed"}}``."""
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    for order in unknown:
        rows[order.scope][order.key] = "ORDER_ID or not_placed"
    return dict(rows)
