"""OpenLineage for the operators: the panel is a dataset namespace, its orders, services, refills and balance datasets.

The one place that imports ``apache-airflow-providers-openlineage`` (the ``openlineage`` extra). Without
it everything here still imports, and :func:`panel_lineage` returns None: Airflow's OpenLineage
listener is not there to ask for facets anyway.

- namespace: ``mirpanel://<host>[:port]`` of the connection's API URL, e.g. ``mirpanel://mirpanel.com``
  (never the path's query, never credentials: the API key travels in the POST body and is not part
  of the URL);
- dataset names: :data:`ORDERS`, :data:`SERVICES`, :data:`REFILLS`, :data:`BALANCE`.

Nothing here talks to the panel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

#: The panel's datasets.
ORDERS, SERVICES, REFILLS, BALANCE = "orders", "services", "refills", "balance"
SCHEME = "mirpanel"


def panel_namespace(api_url: str) -> str:
    """``mirpanel://<host>[:port]`` of a panel's API URL: the host in lower case, no credentials, no path."""
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = parts.port
    return f"{SCHEME}://{host}{f':{port}' if port else ''}"


def panel_lineage(api_url: str, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> Any:
    """An ``OperatorLineage`` with the panel's datasets as inputs and outputs, or None without OpenLineage."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:  # the openlineage extra is not installed
        return None
    namespace = panel_namespace(api_url)
    return OperatorLineage(inputs=[Dataset(namespace=namespace, name=name) for name in inputs],
                           outputs=[Dataset(namespace=namespace, name=name) for name in outputs])
