"""The Airflow plugin of the MirPanel page: a FastAPI app under ``/mirpanel`` and a "MirPanel" menu entry.

Every Airflow component imports plugins (scheduler, workers, triggerer, dag-processor), so this module
stays cheap: it imports nothing of FastAPI, builds no app and touches no database. The app is built by
:class:`LazyApp` on the api-server's first request to ``/mirpanel``.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the app is mounted on the api-server (Airflow refuses /api/v2, /ui, /execution, /auth, /pluginsv2).
URL_PREFIX = "/mirpanel"


class LazyApp:
    """An ASGI app that builds the MirPanel app on its first request, so importing the plugin costs nothing.

    The app is ``airflow_provider_mirpanel.plugins.app.create_app``.
    """

    def __init__(self, factory: str = "airflow_provider_mirpanel.plugins.app:create_app") -> None:
        self.factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        """The built app (built now if needed)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    module, _, name = self.factory.partition(":")
                    self._app = getattr(importlib.import_module(module), name)()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Build the app on the first request, then hand every request to it."""
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyApp({self.factory!r})"


class MirPanelPagePlugin(AirflowPlugin):
    """The MirPanel page: balance, spend, campaigns and orders of unknown outcome, per panel connection."""

    name = "mirpanel"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "MirPanel page"}]
    # Airflow 3.1+: an entry of the UI's navigation showing the app in an iframe (same origin, so the
    # browser sends the _token cookie the app checks).
    external_views = [
        {
            "name": "MirPanel",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "mirpanel",
        }
    ]
