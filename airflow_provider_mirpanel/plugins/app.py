"""The MirPanel page's FastAPI app, mounted by the plugin under ``/mirpanel`` on the api-server.

Airflow does not protect a mounted app: every route here depends on an authenticated user (a Bearer
token or the UI's ``_token`` cookie; none → 401) whom the auth manager allows the ``PLUGINS`` view
(else 403); what a page shows is then filtered per campaign and asset (:mod:`.access`). Read-only:
GET routes and SELECT queries only.
"""

import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_provider_mirpanel.plugins.gather import CAMPAIGNS_PER_PAGE

#: Sent with the page: no script at all, styles and SVG inline, shown only in frames of Airflow's own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


def _timing(started: float) -> dict[str, str]:
    """Return a ``Server-Timing`` header: the time spent reading the DB and rendering.

    ``make bench-deployment`` reads it.
    """
    return {"Server-Timing": f"page;dur={(time.perf_counter() - started) * 1000:.1f}"}


def create_app() -> FastAPI:
    """Return the app: ``/`` (the page) and ``/data.json`` (its JSON twin)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view

    from airflow_provider_mirpanel.plugins.mirpanel_page import URL_PREFIX

    app = FastAPI(
        title="MirPanel",
        dependencies=[Depends(requires_access_view(AccessView.PLUGINS))],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def collect(
        request: Request, user: Any, session: Any, page: int, unknown_page: int, per_page: int
    ) -> tuple[Any, Any]:
        from airflow_provider_mirpanel.plugins.access import Access
        from airflow_provider_mirpanel.plugins.gather import gather
        from airflow_provider_mirpanel.plugins.render import Links

        root = str(request.scope.get("root_path", "")).rstrip("/")
        ui_base = root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else ""
        keep = {"per_page": per_page} if per_page != CAMPAIGNS_PER_PAGE else {}
        links = Links(ui_base, root or URL_PREFIX, keep=keep)
        return gather(session, Access(user), page=page, unknown_page=unknown_page, per_page=per_page), links

    Page = Annotated[int, Query(ge=1, le=1_000_000, description="page of campaigns")]
    UnknownPage = Annotated[int, Query(ge=1, le=1_000_000, description="page of orders of unknown outcome")]
    PerPage = Annotated[int, Query(ge=1, le=100, description="campaigns per page")]

    @app.get("/", response_class=HTMLResponse)
    def page(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        page: Page = 1,
        unknown_page: UnknownPage = 1,
        per_page: PerPage = CAMPAIGNS_PER_PAGE,
    ) -> HTMLResponse:
        """Serve the MirPanel page."""
        from airflow_provider_mirpanel.plugins.render import render_page

        started = time.perf_counter()
        data, links = collect(request, user, session, page, unknown_page, per_page)
        body = render_page(data, links)
        return HTMLResponse(body, headers={**_HEADERS, **_timing(started)})

    @app.get("/data.json")
    def data_json(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        page: Page = 1,
        unknown_page: UnknownPage = 1,
        per_page: PerPage = CAMPAIGNS_PER_PAGE,
    ) -> JSONResponse:
        """Serve the page's data as JSON."""
        from airflow_provider_mirpanel.plugins.twin import page_json

        started = time.perf_counter()
        data, links = collect(request, user, session, page, unknown_page, per_page)
        body = page_json(data, links)
        return JSONResponse(body, headers={**_HEADERS, **_timing(started)})

    return app
