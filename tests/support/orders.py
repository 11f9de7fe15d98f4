"""Orders and catalogue services of the sandbox panel for the operator tests, and XCom's round trip."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_mirpanel.operators.mirpanel import PlaceOrderOperator
from airflow_provider_mirpanel.sandbox import SandboxPanel
from support.airflow_compat import deserialize, serialize
from support.task_context import StandInTi, task_context

ACTIVE_ORDER = "You have active order with this link. Please wait until order being completed."


def service_of(panel: SandboxPanel, type_name: str = "Default", **flags: bool) -> Mapping[str, Any]:
    """The first catalogue service of a type with the given refill/cancel flags."""
    for service in panel.catalogue.services:
        if service.get("type") == type_name and all(service.get(name) is value for name, value in flags.items()):
            return service
    raise LookupError(f"no {type_name} service with {flags}")


def campaign(service: Mapping[str, Any], n: int, **extra: Any) -> list[dict[str, Any]]:
    """``n`` valid orders for a service, order ``i`` linking to ``https://example.com/post/i``."""
    return [
        {"service": service["service"], "link": f"https://example.com/post/{i}", "quantity": service["min"], **extra}
        for i in range(n)
    ]


def link_ends(suffix: str) -> Any:
    return lambda form: form.get("link", "").endswith(suffix)


def xcom_round_trip(value: Any) -> Any:
    """What a downstream task gets: the value through Airflow's XCom serialization and JSON."""
    return deserialize(json.loads(json.dumps(serialize(value))))


def place_one(
    panel: SandboxPanel, ti: StandInTi | None = None, **kwargs: Any
) -> tuple[PlaceOrderOperator, list[dict[str, Any]]]:
    service = service_of(panel)
    op = PlaceOrderOperator(
        task_id="place", service=service["service"], link="https://example.com/a", quantity=service["min"], **kwargs
    )
    return op, op.execute(task_context(ti=ti) if ti else task_context())
