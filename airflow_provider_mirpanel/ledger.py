"""Moved to :mod:`airflow_provider_mirpanel.placement.ledger`; this import path keeps working."""

from airflow_provider_mirpanel.placement.ledger import *  # noqa: F403
