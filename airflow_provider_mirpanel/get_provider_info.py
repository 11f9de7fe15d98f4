"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_mirpanel import __version__
from airflow_provider_mirpanel.client import defaults

_MODULES = "airflow_provider_mirpanel"


def _number_field(label: str, description: str, kind: str, default: float, minimum: float) -> dict[str, Any]:
    """Return a declarative ``conn-fields`` entry of a number (``kind``: number or integer)."""
    return {
        "label": label,
        "description": description,
        "schema": {"type": [kind, "null"], "default": default, "minimum": minimum},
    }


def _default_budgets() -> str:
    return ", ".join(
        f"{action} {defaults.budget_text(*budget)}" for action, budget in defaults.DEFAULT_RATE_LIMITS.items()
    )


def get_provider_info() -> dict[str, Any]:
    """Describe the provider, its hook, operators, sensors, triggers and the ``mirpanel`` connection."""
    return {
        "package-name": "airflow-provider-mirpanel",
        "name": "MirPanel",
        "description": "MirPanel and other Perfect Panel API v2 SMM panels: orders, statuses, refills, "
        "cancels, balance and services.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MirPanel",
                "external-doc-url": "https://mirpanel.com/api",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "MirPanel",
                "python-modules": [f"{_MODULES}.hooks.mirpanel", f"{_MODULES}.hooks.mirpanel_async"],
            }
        ],
        "operators": [
            {
                "integration-name": "MirPanel",
                "python-modules": [f"{_MODULES}.operators.mirpanel", f"{_MODULES}.operators.orders"],
            }
        ],
        "sensors": [{"integration-name": "MirPanel", "python-modules": [f"{_MODULES}.sensors.mirpanel"]}],
        "triggers": [
            {
                "integration-name": "MirPanel",
                "python-modules": [
                    f"{_MODULES}.triggers.mirpanel",
                    f"{_MODULES}.triggers.balance",
                    f"{_MODULES}.triggers.scope",
                ],
            }
        ],
        "extra-links": [f"{_MODULES}.links.PanelOrderLink"],
        # mirpanel://<conn id>/<dataset>: the panel's datasets (and this provider's assets), which
        # OpenLineage shows in the namespace of the panel behind the connection (lineage.py)
        "asset-uris": [
            {
                "schemes": ["mirpanel"],
                "handler": f"{_MODULES}.assets.lineage.sanitize_uri",
                "to_openlineage_converter": f"{_MODULES}.assets.lineage.convert_asset_to_openlineage",
            }
        ],
        "connection-types": [connection_type()],
    }


def connection_type() -> dict[str, Any]:
    """Return the ``mirpanel`` connection type: its hook, field behaviour and declarative extra fields."""
    return {
        "connection-type": "mirpanel",
        "hook-class-name": f"{_MODULES}.hooks.mirpanel.MirPanelHook",
        "hook-name": "MirPanel",
        "ui-field-behaviour": {
            "hidden-fields": ["login", "schema", "port"],
            "relabeling": {"host": "API URL", "password": "API key"},
            "placeholders": {
                "host": defaults.DEFAULT_API_URL,
                "password": "your panel API key (Account page)",
            },
        },
        "conn-fields": {
            "timeout": _number_field(
                "Request timeout (s)",
                "Seconds to wait for the panel's reply.",
                "number",
                defaults.DEFAULT_TIMEOUT,
                0.001,
            ),
            "connect_timeout": _number_field(
                "Connect timeout (s)",
                "Seconds to wait for the connection.",
                "number",
                defaults.DEFAULT_CONNECT_TIMEOUT,
                0.001,
            ),
            "retries": _number_field(
                "Retries",
                "How often a failed read (status, balance, services) "
                "is retried. Orders are never resent after they may have "
                "reached the panel.",
                "integer",
                defaults.DEFAULT_RETRIES,
                0,
            ),
            "backoff": _number_field(
                "Backoff (s)",
                "Wait before the first retry; it doubles at each "
                "retry, with jitter, and never undercuts a Retry-After.",
                "number",
                defaults.DEFAULT_BACKOFF,
                0,
            ),
            "concurrency": _number_field(
                "Concurrency",
                "Requests in flight at once for multi-ID calls (100 IDs per request).",
                "integer",
                defaults.DEFAULT_CONCURRENCY,
                1,
            ),
            "rate_limits": {
                "label": "Rate limits per action",
                "description": f"Empty: the default budgets ({_default_budgets()}; the first four are the published "
                "limits). "
                'To change some, JSON of requests per minute, e.g. {"add": 30, "status": 240} or '
                '{"services": {"limit": 20, "per": 3600}}; false for none. Each task keeps its own '
                "budgets, unless 'Shared budgets (Redis)' is set.",
                "schema": {"type": ["string", "null"]},
            },
            "budget_redis": {
                "label": "Shared budgets (Redis)",
                "description": "A Redis every worker and the triggerer reach (a redis:// URL, or the ID of "
                "an Airflow connection of type redis, e.g. the Celery broker's): the rate limits then hold "
                "for the API key across all tasks, processes and workers. Empty: each task keeps its own. "
                "Needs the redis extra (pip install 'airflow-provider-mirpanel[redis]').",
                "schema": {"type": ["string", "null"]},
            },
            "rate_limit": _number_field(
                "Overall rate limit (requests/min)",
                "Most requests per minute of all "
                "actions together, evenly spaced, on top of the per-action limits; "
                "0 means no overall limit (429 replies are honoured anyway).",
                "number",
                defaults.DEFAULT_RATE_LIMIT,
                0,
            ),
            "verify_ssl": {
                "label": "Verify TLS certificates",
                "description": "Turning this off needs 'Allow insecure transport' too.",
                "schema": {"type": ["boolean", "null"], "default": True},
            },
            "order_url": {
                "label": "Order page URL",
                "description": "The panel's page of one order, with {order} for its ID (e.g. "
                "https://mirpanel.com/orders?search={order}): the 'Panel order' link of tasks that "
                "place orders. Empty: no link.",
                "schema": {"type": ["string", "null"]},
            },
            "allow_insecure": {
                "label": "Allow insecure transport",
                "description": "Allow plain http:// to a non-loopback host and disabled TLS "
                "verification (verify_ssl: false). Sends the API key unprotected.",
                "schema": {"type": ["boolean", "null"], "default": False},
            },
        },
    }
