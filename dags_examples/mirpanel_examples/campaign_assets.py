"""The assets of a campaign's life: its orders placed, and all of them finished.

``mirpanel_campaign`` gives each an event whose ``extra`` summarises the campaign (counts, spend,
statuses; :func:`airflow_provider_mirpanel.assets.campaign_summary`); DAGs scheduled on them —
``mirpanel_campaign_report`` — run when that happens. Not a DAG file: imported by both.
"""

from __future__ import annotations

from airflow.sdk import Asset

#: An event when ``place_orders`` has placed a campaign's orders: extra ``stage, campaign, orders, states, spend``.
CAMPAIGN_PLACED = Asset("mirpanel_campaign_placed")
#: An event when every order of a campaign has ended: extra ``stage, campaign, orders, statuses, spend, remains``.
CAMPAIGN_FINISHED = Asset("mirpanel_campaign_finished")
