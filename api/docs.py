"""The documentation pages, served whole by this process: no CDN, no outside request.

/docs (Swagger UI) and the scripts and styles of both pages come from the installed
``fastapi_offline`` package, mounted at ``STATIC``. /redoc is built here on the same files: ReDoc
also shows a logo fetched from its vendor's CDN, which its options cannot turn off, so the page
carries a Content-Security-Policy that keeps every request on this server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from fastapi_offline import FastAPIOffline

STATIC = "/static-offline-docs"
# ReDoc renders with inline styles and runs its search in a blob: worker.
_REDOC_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
    " script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'"
)


def documented_app(*, title: str, version: str, description: str) -> FastAPI:
    """A FastAPI app whose /docs and /redoc load nothing from outside this server."""
    app = FastAPIOffline(
        title=title, version=version, description=description, redoc_url=None, static_url=STATIC
    )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _REDOC_POLICY
        return page

    return app
