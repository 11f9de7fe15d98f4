"""OpenLineage from the operators and the hook: the panel is a namespace; orders, services, refills, balance datasets.

The one place that imports ``apache-airflow-providers-openlineage`` (the ``openlineage`` extra). Without
it everything here still imports, and :func:`panel_lineage` returns None: Airflow's OpenLineage
listener is not there to ask for facets anyway.

- namespace: ``mirpanel://<host>[:port]`` of the connection's API URL, e.g. ``mirpanel://mirpanel.com``
  (never the path's query, never credentials: the API key travels in the POST body and is not part
  of the URL);
- dataset names: :data:`ORDERS`, :data:`SERVICES`, :data:`REFILLS`, :data:`BALANCE`.

Two ways in:

- the operators and sensors answer ``get_openlineage_facets_on_complete`` (:func:`panel_lineage`);
- :class:`~airflow_provider_mirpanel.hooks.mirpanel.MirPanelHook` reports what each action reads and
  writes to Airflow's hook-level lineage collector (:func:`collect`), so a ``@task`` or
  ``PythonOperator`` that uses the hook shows the panel's datasets too. It reports them as assets
  ``mirpanel://<conn id>/<dataset>`` (:func:`dataset_uri`); the provider registers the scheme
  (``asset-uris`` in provider_info), and :func:`convert_asset_to_openlineage` turns such an asset into
  the dataset of the panel behind that connection. A task that writes what it got from the panel
  elsewhere (a warehouse table) can name the panel dataset it read the same way, so a lineage tool
  draws the edge panel → table.

Nothing here talks to the panel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

#: The panel's datasets.
ORDERS, SERVICES, REFILLS, BALANCE = "orders", "services", "refills", "balance"
SCHEME = "mirpanel"

log = logging.getLogger(__name__)

#: What each API action reads and writes (inputs, outputs), by the action's name.
ACTION_DATASETS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "services": ((SERVICES,), ()),
    "add": ((), (ORDERS,)),
    "status": ((ORDERS,), ()),
    "refill": ((ORDERS,), (REFILLS,)),
    "refill_status": ((REFILLS,), ()),
    "cancel": ((ORDERS,), (ORDERS,)),
    "balance": ((BALANCE,), ()),
}


def panel_namespace(api_url: str) -> str:
    """``mirpanel://<host>[:port]`` of a panel's API URL: the host in lower case, no credentials, no path."""
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = parts.port
    return f"{SCHEME}://{host}{f':{port}' if port else ''}"


def panel_lineage(api_url: str, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> Any:
    """Return an ``OperatorLineage`` with the panel's datasets as inputs and outputs, or None without OpenLineage."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:  # the openlineage extra is not installed
        return None
    namespace = panel_namespace(api_url)
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name) for name in inputs],
        outputs=[Dataset(namespace=namespace, name=name) for name in outputs],
    )


# -- assets of the panel's datasets, for hook-level lineage -----------------------------------------


def dataset_uri(mirpanel_conn_id: str, dataset: str) -> str:
    """Return the asset URI of a panel dataset, named by the panel's connection: ``mirpanel://<conn id>/<dataset>``."""
    return f"{SCHEME}://{mirpanel_conn_id}/{dataset}"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's check of a ``mirpanel://`` asset URI (``asset-uris`` handler): a connection ID and a name."""
    if not uri.netloc:
        raise ValueError("a mirpanel:// asset URI must name the connection: mirpanel://<conn id>/<name>")
    if not uri.path.strip("/"):
        raise ValueError("a mirpanel:// asset URI must name a dataset: mirpanel://<conn id>/<name>")
    return uri


def convert_asset_to_openlineage(asset: Any, lineage_context: Any) -> Any:
    """Return the OpenLineage dataset of a ``mirpanel://<conn id>/<name>`` asset: ``<name>`` in the panel's namespace.

    The namespace is the connection's API URL's host (``mirpanel://mirpanel.com``), taken from the
    hook that reported the asset when it is that connection's, else read from the connection.
    """
    from openlineage.client.event_v2 import Dataset

    parts = urlsplit(asset.uri)
    conn_id, name = parts.netloc, parts.path.strip("/")
    settings = getattr(lineage_context, "settings", None)
    if getattr(lineage_context, "mirpanel_conn_id", None) == conn_id and settings is not None:
        api_url = settings.url
    else:
        from airflow_provider_mirpanel.client.settings import resolve_api_url
        from airflow_provider_mirpanel.version_compat import BaseHook

        conn = BaseHook.get_connection(conn_id)
        api_url = resolve_api_url(conn.host, conn.schema, conn.port)
    return Dataset(namespace=panel_namespace(api_url), name=name)


def collect(context: Any, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Report asset URIs read and written by ``context`` (a hook) to Airflow's hook-level lineage collector.

    A no-op where Airflow collects no hook lineage (no OpenLineage plugin, or no collector on this
    line). Lineage is best effort: a failure to report is logged and never fails the caller.
    """
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
    except ImportError:
        return
    try:
        collector = get_hook_lineage_collector()
        for uri in inputs:
            collector.add_input_asset(context=context, uri=uri)
        for uri in outputs:
            collector.add_output_asset(context=context, uri=uri)
    except Exception:
        log.warning("Could not report hook-level lineage of %r", context, exc_info=True)


def collect_action(context: Any, mirpanel_conn_id: str, action: str) -> None:
    """Report the panel datasets an API action reads and writes (:data:`ACTION_DATASETS`), see :func:`collect`."""
    inputs, outputs = ACTION_DATASETS[action]
    collect(
        context,
        [dataset_uri(mirpanel_conn_id, name) for name in inputs],
        [dataset_uri(mirpanel_conn_id, name) for name in outputs],
    )
