"""The services catalogue the sandbox panel sells: the packaged real one, or one of your own."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from airflow_provider_mirpanel.protocol import to_int

_PACKAGE = "airflow_provider_mirpanel.sandbox"
_DEFAULT_FILE = "services-catalogue.json"


class Catalogue:
    """Services indexed by ID, plus the ``services`` reply serialized once.

    ``services`` keeps each service exactly as given (a real panel's format: ``rate`` as a string,
    ``min``/``max`` as ints, ``refill``/``cancel`` as JSON booleans). Treat it as read-only: the
    default catalogue is shared by every panel of the process.
    """

    def __init__(self, services: Iterable[Mapping[str, Any]], reply: bytes | None = None):
        self.services: list[Mapping[str, Any]] = list(services)
        self.by_id: dict[int, Mapping[str, Any]] = {}
        for service in self.services:
            service_id = to_int(service.get("service"))
            if service_id is None:
                raise ValueError(f"catalogue entry without a numeric 'service' ID: {dict(service)!r}")
            self.by_id[service_id] = service
        self.reply = reply if reply is not None else json.dumps(self.services, ensure_ascii=False).encode()

    def __len__(self) -> int:
        return len(self.services)

    def first_of_type(self, type_name: str) -> Mapping[str, Any]:
        """Return the first service of a type (case-insensitive), e.g. ``"Default"``."""
        wanted = type_name.lower()
        for service in self.services:
            if str(service.get("type", "Default")).lower() == wanted:
                return service
        raise LookupError(f"no {type_name!r} service in the catalogue")


@functools.cache
def default_catalogue() -> Catalogue:
    """Return the real 4,156-service catalogue shipped with the package, parsed once per process."""
    raw = resources.files(_PACKAGE).joinpath("data", _DEFAULT_FILE).read_bytes()
    return Catalogue(json.loads(raw))
