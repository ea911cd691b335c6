"""Operations: liveness, readiness and Prometheus metrics; no key needed, no job touched."""

from __future__ import annotations

import sqlite3

import redis.exceptions
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import metrics
from api.openapi import body
from api.schemas import Health, Readiness
from api.services import Services, Svc
from tasks.errors import LeadArchiveError
from tasks.schema import inspect_tables

router = APIRouter()


@router.get("/healthz", summary="The process is alive", responses={200: body(Health, "Alive")})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis and the database are reachable, the archive table fits",
    responses={
        200: body(Readiness, "Ready"),
        503: body(Readiness, "Not ready: the checks say what is wrong"),
    },
)
async def readyz(services: Svc) -> JSONResponse:
    checks = await run_in_threadpool(_readiness, services)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _readiness(services: Services) -> dict[str, str]:
    settings, rt = services.settings, services.runtime
    checks: dict[str, str] = {}
    store = "jobs" if settings.embedded else "redis"
    try:
        rt.jobs.ping()
        checks[store] = "ok"
    except (redis.exceptions.RedisError, OSError, sqlite3.Error) as exc:
        checks[store] = f"unreachable: {type(exc).__name__}"
    if rt.broker is not None and settings.broker_url != settings.result_backend:
        # A broker of its own: the job store answering does not mean a job can be enqueued.
        try:
            rt.broker.ping()
            checks["broker"] = "ok"
        except (redis.exceptions.RedisError, OSError) as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
    try:
        with rt.engine.connect() as conn:
            inspect_tables(conn)
        checks["database"] = "ok"
    except LeadArchiveError as exc:
        checks["database"] = str(exc)
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    return checks


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus() -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
