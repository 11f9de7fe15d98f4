"""Moved to :mod:`airflow_provider_mirpanel.balance.spending`; this import path keeps working."""

from airflow_provider_mirpanel.balance.spending import *  # noqa: F403
