"""The sandbox panel: a local Perfect Panel API v2 server on loopback, for tests, demos and offline DAGs.

::

    from airflow_provider_mirpanel.sandbox import SandboxPanel

    with SandboxPanel() as panel:
        os.environ.update(panel.env())        # AIRFLOW_CONN_MIRPANEL_DEFAULT -> the sandbox
        panel.faults.add("status", "http_status", status=503, times=2)
        ...

From a shell: ``python -m airflow_provider_mirpanel.sandbox --port 8765``. It never contacts a
real panel and only listens on loopback addresses.
"""

from airflow_provider_mirpanel.sandbox.catalogue import Catalogue, default_catalogue
from airflow_provider_mirpanel.sandbox.faults import Fault, FaultKind, Faults
from airflow_provider_mirpanel.sandbox.log import RequestEntry
from airflow_provider_mirpanel.sandbox.panel import CONN_ENV_VAR, SandboxPanel
from airflow_provider_mirpanel.sandbox.state import Lifecycle, Order, PanelState, Refill

__all__ = [
    "CONN_ENV_VAR",
    "Catalogue",
    "Fault",
    "FaultKind",
    "Faults",
    "Lifecycle",
    "Order",
    "PanelState",
    "Refill",
    "RequestEntry",
    "SandboxPanel",
    "default_catalogue",
]
