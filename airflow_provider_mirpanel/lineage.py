"""Moved to :mod:`airflow_provider_mirpanel.assets.lineage`; this import path keeps working."""

from airflow_provider_mirpanel.assets.lineage import *  # noqa: F403
