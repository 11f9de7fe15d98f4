"""The MirPanel page's JSON twin: the same data, for tests and scripts (``GET /mirpanel/data.json``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from airflow_provider_mirpanel.plugins.gather import BalanceChart, Campaign, ConnectionView, PageData, UnknownOrder
from airflow_provider_mirpanel.plugins.render import Links, conf_of


def page_json(data: PageData, links: Links) -> dict[str, Any]:
    """Return the page's data as JSON-able values (times as ISO 8601 UTC text)."""
    return {
        "airflow_version": data.airflow_version,
        "state_stores": data.state_stores,
        "generated_at": _iso(data.generated_at),
        "notes": data.notes,
        "connections": [_connection(view) for view in data.connections],
        "campaigns": {
            "total": data.campaign_total,
            "page": data.page,
            "pages": data.pages,
            "items": [_campaign(campaign, links) for campaign in data.campaigns],
        },
        "unknown_orders": {
            "total": data.unknown_total,
            "page": data.unknown_page,
            "pages": data.unknown_pages,
            "items": [_unknown(order) for order in data.unknown],
        },
    }


def _connection(view: ConnectionView) -> dict[str, Any]:
    latest = view.latest
    return {
        "conn_id": view.conn_id or None,  # None: a balance watch whose watcher (and so its connection) is gone
        "latest": None if latest is None else {"at": _iso(latest[0]), "balance": latest[1], "source": latest[2]},
        "histories": [_chart(chart) for chart in view.charts],
        "spend_per_day": [{"day": day.isoformat(), "spend": spend} for day, spend in view.spend_per_day],
        "spend_per_day_source": "spend of the campaigns' placed asset events",
    }


def _chart(chart: BalanceChart) -> dict[str, Any]:
    projection = chart.projection.payload() if chart.projection is not None else None
    if projection is not None:
        projection.pop("currency", None)
        projection["message"] = chart.projection.message() if chart.projection is not None else None
    return {
        "source": chart.source,
        "asset": chart.asset_name,
        "updated_at": _iso(chart.updated_at),
        "readings": [{"at": _iso(at), "balance": balance} for at, balance in chart.samples],
        "min_balance": chart.min_balance,
        "runs_out_within_hours": chart.runs_out_within_hours,
        "low": chart.low,
        "projection": projection,
    }


def _campaign(campaign: Campaign, links: Links) -> dict[str, Any]:
    writer = campaign.last_written
    return {
        "scope": campaign.scope,
        "conn_id": campaign.conn_id,
        "ledger_pages": campaign.pages,
        "counted": campaign.counted,
        "placed": campaign.placed,
        "refused": campaign.refused,
        "unknown": campaign.unknown,
        "spend": campaign.spend,
        "held": campaign.held,
        "last_written": None
        if writer is None
        else {
            "at": _iso(writer.at),
            "dag_id": writer.dag_id,
            "run_id": writer.run_id,
            "task_id": writer.task_id,
            "source": writer.source,
            "url": links.run(writer.dag_id, writer.run_id),
        },
        "statuses": campaign.statuses,
        "finished_runs": campaign.event_runs,
        "events_spend": campaign.event_spend,
        "resolve_conf": conf_of(campaign.scope),
    }


def _unknown(order: UnknownOrder) -> dict[str, Any]:
    return {
        "conn_id": order.conn_id,
        "scope": order.scope,
        "key": order.key,
        "state": order.state,
        "at": _iso(order.at),
        "error": order.error,
        "service": order.service,
        "link": order.link,
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        from datetime import timezone

        value = datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value.isoformat() if isinstance(value, date) else str(value)
