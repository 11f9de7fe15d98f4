"""Moved to :mod:`airflow_provider_mirpanel.utils.state_stores`; this import path keeps working."""

from airflow_provider_mirpanel.utils.state_stores import *  # noqa: F403
