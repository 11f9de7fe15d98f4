"""Assets this provider uses, and asset events that summarise a campaign for DAGs scheduled on it.

- :func:`balance_asset`: the asset whose state store keeps a connection's balance history (the
  spend rate of :class:`~airflow_provider_mirpanel.operators.mirpanel.BalanceCheckOperator`).
- :class:`CampaignAssetEvent`: give it as ``post_execute=`` to a task with Asset ``outlets`` —
  ``PlaceOrderOperator`` ("placed") or ``OrderStatusSensor`` ("finished") — and the asset event
  Airflow emits for the task carries ``extra`` summarising its records, so a report or
  reconciliation DAG with ``schedule=[campaign_asset]`` knows what happened without reading XCom::

      PlaceOrderOperator(..., outlets=[placed], post_execute=CampaignAssetEvent("placed", "{{ params.campaign }}"))

Nothing here talks to the panel.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

#: The stages a campaign event reports.
STAGES = ("placed", "finished")


def balance_asset(mirpanel_conn_id: str) -> Any:
    """Return the asset whose state store keeps the balance history of one panel connection."""
    from airflow_provider_mirpanel.version_compat import Asset

    return Asset(name=f"mirpanel_balance__{mirpanel_conn_id}", uri=f"mirpanel://{mirpanel_conn_id}/balance")


def run_events(context: Mapping[str, Any], asset: Any) -> list[Any]:
    """Return the asset events a task's run is about: those that triggered the run, else the asset's latest.

    A run the scheduler starts for the asset has them in ``triggering_asset_events``. A run started by
    hand (or by ``airflow dags test``) has none: then the asset's latest event, read through the
    task's inlet (give the task ``inlets=[asset]``).
    """
    events = list(context["triggering_asset_events"].get(asset, []))
    if not events:
        events = list(context["inlet_events"][asset].ascending(False).limit(1))
        log.info("no triggering event (a manual run): reporting the asset's latest event")
    return events


def campaign_summary(records: Sequence[Mapping[str, Any]], stage: str, campaign: str | None = None) -> dict[str, Any]:
    """Return a small JSON summary of a campaign's records (placed-order records or final status records).

    ``{"stage", "campaign", "orders", "states" | "statuses", "spend", "remains"}``: counts per
    placement state (``placed``, ``refused``, …) or per final status (``Completed``, ``Partial``, …),
    ``spend`` the estimated cost of the placed orders or the charges of the finished ones, and for
    finished orders the units the panel did not deliver (``remains``). No order IDs: it stays small
    for any number of orders.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    summary: dict[str, Any] = {"stage": stage, "campaign": campaign, "orders": len(records)}
    if stage == "placed":
        placed = [record for record in records if record.get("state") == "placed"]
        summary["states"] = dict(Counter(str(record.get("state")) for record in records))
        summary["spend"] = round(sum(_amount_or_zero(record.get("cost")) for record in placed), 6)
    else:
        summary["statuses"] = dict(Counter(str(record.get("status")) for record in records))
        summary["spend"] = round(sum(_amount_or_zero(record.get("charge")) for record in records), 6)
        summary["remains"] = int(sum(_amount_or_zero(record.get("remains")) for record in records))
    return summary


class CampaignAssetEvent:
    """Put a campaign summary in the ``extra`` of the task's asset events (a ``post_execute`` callable).

    .. seealso::
        ``docs/reference.md``, "CampaignAssetEvent": what it does, returns and raises;
        how to use it: ``docs/alerts-and-assets.md``.

    :param stage: ``"placed"`` (the task returns placed-order records) or ``"finished"`` (final
        status records).
    :param campaign: the campaign's name, a Jinja template rendered with the task's context (e.g.
        ``"{{ params.campaign }}"``); None leaves it out.
    """

    def __init__(self, stage: str, campaign: str | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        self.campaign = campaign

    def __call__(self, context: Any, result: Any = None) -> None:
        """Put the summary of ``result`` (the task's records) in the ``extra`` of each Asset outlet's event."""
        records = result if isinstance(result, list) else []
        task = context["task"]
        campaign = None if self.campaign is None else str(task.render_template(self.campaign, context))
        summary = campaign_summary(records, self.stage, campaign)
        # Which ledger scope (and connection) the event is about, when its task places into one: the MirPanel
        # page matches events to campaigns by it (the user's ``campaign`` text need not be the scope).
        scope = getattr(task, "ledger_scope", None)
        if isinstance(scope, str) and scope:
            summary["ledger_scope"] = scope
            summary["mirpanel_conn_id"] = getattr(task, "mirpanel_conn_id", None)
        from airflow_provider_mirpanel.version_compat import Asset

        outlet_events = context["outlet_events"]
        for outlet in task.outlets:
            if isinstance(outlet, Asset):
                outlet_events[outlet].extra.update(summary)
        task.log.info("campaign %s: %s", self.stage, summary)


def _amount_or_zero(value: Any) -> float:
    """Return a record's number (cost, charge, remains); 0 when it has none (None, "Unknown", a bool)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
