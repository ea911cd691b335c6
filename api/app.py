"""The HTTP front end: validate, authenticate, refuse or enqueue; and report jobs by ID.

``create_app`` only assembles: the collaborators (``api.services.Services``), the routers of
``api.routes``, problem+json errors, metrics and the OpenAPI document. /docs and /redoc load
nothing from outside this server (``api.docs``): a call-center server often has no internet access.
"""

from __future__ import annotations

from celery import Celery
from fastapi import FastAPI

from api import metrics, openapi, problems
from api.docs import documented_app
from api.routes import archive, dearchive, operations, selection
from api.services import Services
from tasks.celery_config import create_celery
from tasks.runtime import Runtime
from tasks.settings import Settings
from tasks.startup import service_settings


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    celery: Celery | None = None,
) -> FastAPI:
    """The API application; collaborators are built from the settings unless given.

    Without ``settings`` (uvicorn's factory), the process's own, checked as for any service: a
    malformed setting or undecided office hours stop it before it listens.
    """
    settings = settings or service_settings()
    rt = runtime or Runtime(settings)
    services = Services.build(settings, rt, celery or create_celery(settings, rt))
    app = documented_app(
        title="LeadArchive",
        version="0.1.0",
        description=(
            "Archives Vicidial leads: copies them into vicidial_list_archive, refreshes archived"
            " copies, and deletes a live lead only when its archive copy is identical."
        ),
    )
    problems.install(app)
    metrics.install(app)
    openapi.install(app, settings.max_lead_ids)
    for router in (archive.router, selection.router, dearchive.router, operations.router):
        # The routes themselves, not app.include_router: an included router is matched as a
        # nested router on every request, about 25 us more per request (FastAPI 0.165).
        app.router.routes.extend(router.routes)
    app.state.services = services
    return app
