"""Placing orders exactly once: input rows (``order_rows``), the ledger (``ledger``), one try (``run``).

Importing this package gives what the former module ``airflow_provider_mirpanel.placement`` gave.
"""

from airflow_provider_mirpanel.placement.run import *  # noqa: F403
from airflow_provider_mirpanel.placement.run import __all__ as __all__
