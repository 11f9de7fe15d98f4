"""Moved to :mod:`airflow_provider_mirpanel.get_provider_info`; this import path keeps working."""

from airflow_provider_mirpanel.get_provider_info import *  # noqa: F403
