"""The MirPanel page as HTML: a Jinja template (autoescaped) with inline SVG charts; no JavaScript.

Every text on the page is escaped by the template (campaign names, keys, links and errors come from
users' CSV files); a link is clickable only when it is ``http(s)``. Links into Airflow's UI open where the
page is: Airflow's UI sandboxes a plugin's frame without top navigation.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from datetime import date, datetime, timezone
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from airflow_provider_mirpanel.plugins.gather import BalanceChart, PageData, unknown_rows

#: The example DAG that records what the panel holds for orders of unknown outcome.
RESOLVE_DAG_ID = "mirpanel_resolve_orders"
CHART_WIDTH, CHART_HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 560, 170, 64, 22, 10
STATUS_COLOURS = {
    "Completed": "#2f9e44",
    "Partial": "#f59f00",
    "Canceled": "#e03131",
    "Refunded": "#c2255c",
    "In progress": "#1c7ed6",
    "Processing": "#1971c2",
    "Pending": "#868e96",
}


def safe_href(url: Any) -> str | None:
    """``url`` when it is an ``http(s)`` URL with a host; None otherwise (``javascript:``, ``data:``, …)."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def when(value: Any) -> str:
    """Return a time as ``2026-12-04 15:20 UTC``: epoch seconds, a datetime or ISO 8601 text; ``—`` for None."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    at = datetime.fromtimestamp(value, timezone.utc) if isinstance(value, (int, float)) else value
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def money(value: Any) -> str:
    """Return an amount with two decimals and thousands separators; ``—`` for None."""
    return "—" if value is None else f"{value:,.2f}"


def line_chart(chart: BalanceChart) -> dict[str, Any]:
    """Return the geometry of a balance chart: readings as a polyline, the minimum as a line, axis labels."""
    samples = chart.samples
    if not samples:
        return {"empty": True, "width": CHART_WIDTH, "height": CHART_HEIGHT}
    times = [at for at, _ in samples]
    values = [balance for _, balance in samples] + ([chart.min_balance] if chart.min_balance is not None else [])
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    margin = (high - low) * 0.08
    low, high = low - margin, high + margin
    start, end = times[0], times[-1]
    width, height = CHART_WIDTH - PAD_LEFT - 8, CHART_HEIGHT - PAD_BOTTOM - PAD_TOP

    def x(at: float) -> float:
        return PAD_LEFT + (width / 2 if end == start else (at - start) / (end - start) * width)

    def y(value: float) -> float:
        return PAD_TOP + (high - value) / (high - low) * height

    points = [
        {"x": round(x(at), 1), "y": round(y(balance), 1), "title": f"{when(at)}: {balance:,.2f}"}
        for at, balance in samples
    ]
    return {
        "empty": False,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "points": points,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
        "threshold": None if chart.min_balance is None else round(y(chart.min_balance), 1),
        "threshold_label": None if chart.min_balance is None else f"minimum {chart.min_balance:,.2f}",
        "y_labels": [{"y": round(y(v), 1), "text": f"{v:,.2f}"} for v in (high - margin, low + margin)],
        "x_labels": [
            {"x": PAD_LEFT, "text": when(start), "anchor": "start"},
            {"x": PAD_LEFT + width, "text": when(end), "anchor": "end"},
        ],
        "left": PAD_LEFT,
        "right": PAD_LEFT + width,
        "bottom": PAD_TOP + height,
        "top": PAD_TOP,
    }


def bar_chart(days: Sequence[tuple[date, float]]) -> dict[str, Any]:
    """Return the geometry of the spend-per-day chart (one bar a day)."""
    top = max((spend for _, spend in days), default=0.0)
    width, height = CHART_WIDTH - PAD_LEFT - 8, CHART_HEIGHT - PAD_BOTTOM - PAD_TOP
    step = width / max(1, len(days))
    bars = [
        {
            "x": round(PAD_LEFT + n * step + 1, 1),
            "w": round(max(1.0, step - 2), 1),
            "h": round(0 if not top else spend / top * height, 1),
            "y": round(PAD_TOP + height - (0 if not top else spend / top * height), 1),
            "title": f"{day.isoformat()}: {spend:,.2f}",
        }
        for n, (day, spend) in enumerate(days)
    ]
    return {
        "empty": not top,
        "bars": bars,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "top": money(top),
        "left": PAD_LEFT,
        "bottom": PAD_TOP + height,
        "top_y": PAD_TOP,
        "first": days[0][0].isoformat() if days else "",
        "last": days[-1][0].isoformat() if days else "",
        "total": money(sum(spend for _, spend in days)),
    }


def status_mix(statuses: dict[str, int]) -> list[dict[str, Any]]:
    """Return the segments of a campaign's status bar (120 px wide), largest first."""
    total = sum(statuses.values())
    segments, offset = [], 0.0
    for status, count in sorted(statuses.items(), key=lambda item: (-item[1], item[0])):
        share = count / total * 120 if total else 0
        segments.append(
            {
                "status": status,
                "count": count,
                "x": round(offset, 1),
                "w": round(share, 1),
                "colour": STATUS_COLOURS.get(status, "#adb5bd"),
            }
        )
        offset += share
    return segments


class Links:
    """URLs of Airflow's UI and of this page, from where the app is mounted."""

    def __init__(self, ui_base: str, page_base: str, keep: dict[str, Any] | None = None) -> None:
        self.ui_base = ui_base.rstrip("/")
        self.page_base = page_base.rstrip("/")
        self.keep = keep or {}  # query parameters every link of the page keeps (per_page)

    def run(self, dag_id: str | None, run_id: str | None) -> str | None:
        """Return the URL of a DAG run in Airflow's UI; None without one."""
        if not dag_id or not run_id:
            return None
        return f"{self.ui_base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"

    def dag(self, dag_id: str) -> str:
        """Return the URL of a DAG in Airflow's UI."""
        return f"{self.ui_base}/dags/{quote(dag_id, safe='')}"

    def trigger_form(self, dag_id: str) -> str:
        """Return where the resolve DAG is triggered: the DAG's page.

        Airflow 3.1–3.3's UI has no route of its own for the trigger form (it is a dialog of the DAG's page).
        """
        return self.dag(dag_id)

    def page(self, **params: Any) -> str:
        """Return the URL of the page with ``params``."""
        return f"{self.page_base}/{self._query(params)}"

    def twin(self, **params: Any) -> str:
        """Return the URL of the page's JSON twin with ``params``."""
        return f"{self.page_base}/data.json{self._query(params)}"

    def _query(self, params: dict[str, Any]) -> str:
        query = urlencode({name: value for name, value in {**params, **self.keep}.items() if value not in (None, 1)})
        return f"?{query}" if query else ""


@cache
def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("airflow_provider_mirpanel.plugins", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(when=when, money=money, safe_href=safe_href)
    environment.globals.update(money=money)
    return environment


def render_page(data: PageData, links: Links) -> str:
    """Return the page's HTML."""
    resolve = {
        scope: json.dumps({"campaign": scope, "resolutions": rows}, indent=2, ensure_ascii=False)
        for scope, rows in unknown_rows(data.unknown).items()
    }
    commands = {
        scope: f"airflow dags trigger {RESOLVE_DAG_ID} -c {shlex.quote(json.dumps(conf_of(scope)))}"
        for scope in resolve
    }
    html: str = (
        _environment()
        .get_template("mirpanel_page.html")
        .render(
            data=data,
            links=links,
            line_chart=line_chart,
            bar_chart=bar_chart,
            status_mix=status_mix,
            resolve=resolve,
            commands=commands,
            resolve_dag=RESOLVE_DAG_ID,
        )
    )
    return html


def conf_of(scope: str) -> dict[str, Any]:
    """Return the conf that lists a campaign's unknown orders (an empty ``resolutions`` only lists)."""
    return {"campaign": scope}
