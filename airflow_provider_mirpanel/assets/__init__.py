"""Assets and lineage: the assets this provider uses and emits (``events``), OpenLineage (``lineage``).

Importing this package gives what the former module ``airflow_provider_mirpanel.assets`` gave.
"""

from airflow_provider_mirpanel.assets.events import *  # noqa: F403
