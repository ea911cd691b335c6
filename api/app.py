"""The HTTP front end: validate, authenticate, refuse or enqueue; and report jobs by ID."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from api import metrics, openapi, problems
from api.auth import authenticate
from api.openapi import SECURED, body
from api.problems import Problem
from api.ratelimit import RateLimiter
from api.schemas import SEED_EXAMPLE, Accepted, ArchiveRequest, Health, JobView, Readiness
from tasks.admin_log import client_address
from tasks.celery_config import create_celery
from tasks.errors import IdempotencyConflict, LeadArchiveError, redis_unavailable
from tasks.publishing import publish
from tasks.records import JobRecord, now_iso
from tasks.runtime import Runtime
from tasks.schema import inspect_tables
from tasks.settings import Settings
from tasks.startup import service_settings

log = logging.getLogger("leadarchive.api")

ARCHIVE_PATH = "/vicidial/leads/archive"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# Errors of the broker's client (kombu) and of sockets that mean Redis cannot be reached. Errors of
# the Redis client itself are judged by tasks.errors.redis_unavailable.
BROKER_DOWN = (
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)


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
    celery_app = celery or create_celery(settings, rt)
    limiter = RateLimiter(settings.rate_limit, None if settings.embedded else rt.redis)

    app = FastAPI(
        title="LeadArchive",
        version="0.1.0",
        description=(
            "Archives Vicidial leads: copies them into vicidial_list_archive, refreshes archived"
            " copies, and deletes a live lead only when its archive copy is identical."
        ),
    )
    problems.install(app)
    metrics.install(app)
    openapi.install(app)
    request_schema = ArchiveRequest.model_json_schema()
    # The limit is a setting; the document states this server's, and `leadarchive submit`
    # reads it to size its batches.
    request_schema["properties"]["lead_ids"]["maxItems"] = settings.max_lead_ids

    def key_name(request: Request) -> str:
        return authenticate(request.headers.get("authorization"), settings.key_hashes())

    @app.post(
        ARCHIVE_PATH,
        status_code=202,
        response_model=Accepted,
        summary="Submit leads to archive",
        responses={
            202: {
                "headers": {
                    "Location": {
                        "required": True,
                        "description": "The job's status URL",
                        "schema": {"type": "string"},
                    }
                }
            },
            **openapi.problems(400, 401, 413, 415, 422, 429, 503),
        },
        openapi_extra={
            "security": SECURED,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": request_schema,
                        "example": SEED_EXAMPLE,
                    }
                },
            },
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "The same key with the same body returns the same job",
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": IDEMPOTENCY_KEY_PATTERN,
                    },
                }
            ],
        },
    )
    async def submit(request: Request) -> JSONResponse:
        owner = key_name(request)
        if limiter.enabled:
            await _guard(run_in_threadpool(limiter.check, owner))
        payload = await _json_body(request, settings.max_body_bytes)
        archive_request = _validate(payload, settings.max_lead_ids)
        now = rt.clock()
        opens_at = rt.office_hours.window_opens_at(now)
        if opens_at is not None:
            raise Problem(
                503,
                "office-hours",
                "Service Unavailable",
                "archiving runs outside office hours only",
                headers={"Retry-After": str(rt.office_hours.seconds_until_open(now))},
                opens_at=now_iso(opens_at),
            )
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise Problem(
                400,
                "bad-idempotency-key",
                "Bad Request",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
        # For Vicidial's admin log; uvicorn runs with proxy_headers, so behind the reverse proxy
        # this is the client's address, not the proxy's.
        client_ip = client_address(request.client.host if request.client else None)
        job_id = await _guard(
            run_in_threadpool(
                _create_and_enqueue, owner, archive_request, idempotency_key, client_ip
            )
        )
        url = f"{ARCHIVE_PATH}/{job_id}"
        return JSONResponse(
            Accepted(job_id=job_id, status="queued", status_url=url).model_dump(),
            status_code=202,
            headers={"Location": url},
        )

    def _create_and_enqueue(
        owner: str, job_request: ArchiveRequest, idempotency_key: str | None, client_ip: str
    ) -> str:
        fingerprint = job_request.fingerprint()
        try:
            job_id, created = rt.jobs.create(
                owner,
                job_request,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                client_ip=client_ip,
            )
        except IdempotencyConflict:
            raise Problem(
                422,
                "idempotency-conflict",
                "Unprocessable Content",
                "this Idempotency-Key was used with a different request",
            ) from None
        if created:
            try:
                publish(celery_app, job_id, job_request, rt.broker)
            except BaseException:
                rt.jobs.forget(job_id)
                raise
            metrics.JOBS_SUBMITTED.inc()
            log.info("job queued", extra={"job_id": job_id, "key_name": owner})
        return job_id

    async def owned_record(job_id: str, request: Request) -> JobRecord:
        """The job's record if this request's key submitted it; 404 as if absent otherwise."""
        owner = key_name(request)
        record: JobRecord | None = await _guard(run_in_threadpool(rt.jobs.get, job_id))
        if record is None or record.owner != owner:
            raise problems.not_found()
        return record

    @app.get(
        f"{ARCHIVE_PATH}/{{job_id}}",
        summary="A job's status and, when done, its report",
        responses={200: body(JobView, "The job"), **openapi.problems(401, 404, 503)},
        openapi_extra={"security": SECURED},
    )
    async def status(job_id: str, request: Request) -> dict[str, Any]:
        return (await owned_record(job_id, request)).view()

    @app.delete(
        f"{ARCHIVE_PATH}/{{job_id}}",
        summary="Cancel a job that has not started",
        responses={
            200: body(JobView, "The cancelled job"),
            **openapi.problems(401, 404, 409, 503),
        },
        openapi_extra={"security": SECURED},
    )
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        await owned_record(job_id, request)
        before = await _guard(run_in_threadpool(rt.jobs.cancel, job_id))
        if before not in ("queued", "deferred", "cancelled"):
            raise Problem(
                409,
                "not-cancellable",
                "Conflict",
                f"the job is {before} and can no longer be cancelled",
            )
        record: JobRecord | None = await _guard(run_in_threadpool(rt.jobs.get, job_id))
        if record is None:
            raise problems.not_found()
        return record.view()

    @app.get("/healthz", summary="The process is alive", responses={200: body(Health, "Alive")})
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Redis and the database are reachable, the archive table fits",
        responses={
            200: body(Readiness, "Ready"),
            503: body(Readiness, "Not ready: the checks say what is wrong"),
        },
    )
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(_readiness)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    def _readiness() -> dict[str, str]:
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

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.state.runtime = rt
    app.state.celery = celery_app
    return app


async def _guard(awaitable: Any) -> Any:
    """Await a Redis or broker call; an unreachable Redis becomes a 503, never a stack trace."""
    try:
        return await awaitable
    except Exception as exc:
        # Unreachable, or it answered but cannot serve now (out of memory, a replica, ...).
        if not (isinstance(exc, BROKER_DOWN) or redis_unavailable(exc)):
            raise
        log.warning("redis unreachable or cannot serve", exc_info=True)
        raise problems.broker_unavailable() from None


async def _json_body(request: Request, cap: int) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "send the body as Content-Type: application/json",
        )
    too_large = Problem(
        413, "body-too-large", "Content Too Large", f"the body is larger than {cap} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_large
    try:
        payload = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        # `{"delete_leads": false, "delete_leads": true}` must not be read as a delete: which
        # of the two a parser keeps differs between parsers, so neither is trusted.
        raise Problem(
            400,
            "duplicate-key",
            "Bad Request",
            f"the body names {json.dumps(exc.key)} more than once in one object",
        ) from None
    except (ValueError, RecursionError):
        raise Problem(400, "malformed-json", "Bad Request", "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise Problem(400, "not-an-object", "Bad Request", "the body must be a JSON object")
    return payload


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: an object, unless it names a key twice."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(key)
        obj[key] = value
    return obj


def _validate(payload: dict[str, Any], limit: int) -> ArchiveRequest:
    lead_ids = payload.get("lead_ids")
    if isinstance(lead_ids, list) and len(lead_ids) > limit:
        raise Problem(
            422,
            "too-many-lead-ids",
            "Unprocessable Content",
            f"lead_ids has {len(lead_ids)} values; the limit is {limit} per request",
            errors=[{"loc": ["lead_ids"], "msg": f"at most {limit} values", "type": "too_long"}],
        )
    try:
        return ArchiveRequest.model_validate(payload)
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise Problem(
            422,
            "invalid-request",
            "Unprocessable Content",
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors),
            errors=errors,
        ) from None
