"""Archive jobs: submit leads (POST), read a job's status and report (GET), cancel it (DELETE).

Every route takes an ``Owner``: a job is visible only to the key that submitted it, and any other
key is told 404, as if it did not exist. A job ID that is not of the form ``tasks.jobs.new_job_id``
gives is answered 404 before Redis is asked. Submitting checks, in this order: the key, the rate
limit, the body (media type, size, JSON, fields, the key's own lead limit), the actions the key
may use (403), office hours, the Idempotency-Key; only then is anything written, and a job whose
message cannot be enqueued is removed again. A key scoped to lists gets them in its job's record.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api import metrics, openapi, problems
from api.auth import Owner, require_action, scope_of
from api.body import read_json_object
from api.openapi import body
from api.problems import Problem
from api.schemas import SEED_EXAMPLE, Accepted, ArchiveRequest, JobView
from api.services import Services, Svc, guard
from tasks.admin_log import client_address
from tasks.errors import IdempotencyConflict, StoreFullError, TooManyPendingJobs
from tasks.publishing import publish
from tasks.records import JobRecord, now_iso
from tasks.scopes import ARCHIVE_REQUEST_ACTIONS

log = logging.getLogger("leadarchive.api")

ARCHIVE_PATH = "/vicidial/leads/archive"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
# What tasks.jobs.new_job_id makes: secrets.token_urlsafe(16), 22 URL-safe base64 characters.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")

router = APIRouter()


@router.post(
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
        **openapi.problems(400, 401, 403, 413, 415, 422, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ArchiveRequest.model_json_schema(),
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
async def submit(owner: Owner, services: Svc, request: Request) -> JSONResponse:
    settings, rt = services.settings, services.runtime
    if services.limiter.enabled:
        await guard(run_in_threadpool(services.limiter.check, owner))
    payload = await read_json_object(request, settings.max_body_bytes)
    # --- scoped keys: the key's own lead limit (422), then its actions (403) ---
    archive_request = _validate(payload, scope_of(owner).lead_limit(settings.max_lead_ids))
    require_action(owner, *(ARCHIVE_REQUEST_ACTIONS[a] for a in archive_request.requested()))
    # ---
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
    job_id = await guard(
        run_in_threadpool(
            _create_and_enqueue, services, owner, archive_request, idempotency_key, client_ip
        )
    )
    url = f"{ARCHIVE_PATH}/{job_id}"
    return JSONResponse(
        Accepted(job_id=job_id, status="queued", status_url=url).model_dump(),
        status_code=202,
        headers={"Location": url},
    )


def _create_and_enqueue(
    services: Services,
    owner: str,
    job_request: ArchiveRequest,
    idempotency_key: str | None,
    client_ip: str,
) -> str:
    rt = services.runtime
    fingerprint = job_request.fingerprint()
    try:
        job_id, created = rt.jobs.create(
            owner,
            job_request,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            client_ip=client_ip,
            max_pending=services.settings.max_pending_jobs,
            lists=scope_of(owner).lists,  # scoped keys: the record carries the allowed lists
        )
    except IdempotencyConflict:
        raise Problem(
            422,
            "idempotency-conflict",
            "Unprocessable Content",
            "this Idempotency-Key was used with a different request",
        ) from None
    except TooManyPendingJobs as exc:
        raise Problem(
            429,
            "too-many-pending-jobs",
            "Too Many Requests",
            str(exc),
            headers={"Retry-After": str(exc.retry_after)},
            pending=exc.pending,
            limit=exc.limit,
        ) from None
    except StoreFullError as exc:
        metrics.STORE_FULL.inc()
        raise Problem(
            503,
            "store-full",
            "Service Unavailable",
            f"{exc}; try again later",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    if created:
        try:
            publish(services.celery, job_id, job_request, rt.broker)
        except BaseException:
            rt.jobs.forget(job_id)
            raise
        metrics.JOBS_SUBMITTED.inc()
        log.info("job queued", extra={"job_id": job_id, "key_name": owner})
    return job_id


def _validate(payload: dict[str, Any], limit: int) -> ArchiveRequest:
    lead_ids = payload.get("lead_ids")
    if isinstance(lead_ids, list) and len(lead_ids) > limit:
        raise Problem(
            422,
            "too-many-lead-ids",
            "Unprocessable Content",
            f"lead_ids has {len(lead_ids)} values; the limit is {limit} per request",
            errors=[{"loc": ["lead_ids"], "msg": f"at most {limit} values", "type": "too_long"}],
            limit=limit,
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


async def _job_id(job_id: str) -> str:
    """The path's job ID if it is one the API could have given; 404 otherwise, Redis unasked."""
    if _JOB_ID.fullmatch(job_id) is None:
        raise problems.not_found()
    return job_id


JobId = Annotated[str, Depends(_job_id)]


async def _owned_job(owner: Owner, job_id: JobId, services: Svc) -> JobRecord:
    """The job's record if this request's key submitted it; 404 as if absent otherwise."""
    record = await guard(run_in_threadpool(services.runtime.jobs.get, job_id))
    if record is None or record.owner != owner:
        raise problems.not_found()
    return record


OwnedJob = Annotated[JobRecord, Depends(_owned_job)]


@router.get(
    f"{ARCHIVE_PATH}/{{job_id}}",
    summary="A job's status and, when done, its report",
    responses={200: body(JobView, "The job"), **openapi.problems(401, 404, 503)},
)
async def status(job: OwnedJob) -> dict[str, Any]:
    return job.view()


@router.delete(
    f"{ARCHIVE_PATH}/{{job_id}}",
    summary="Cancel a job that has not started",
    responses={
        200: body(JobView, "The cancelled job"),
        **openapi.problems(401, 404, 409, 503),
    },
)
async def cancel(_job: OwnedJob, job_id: JobId, services: Svc) -> dict[str, Any]:
    # The job first: its key is checked (401) before its ID (404).
    jobs = services.runtime.jobs
    before = await guard(run_in_threadpool(jobs.cancel, job_id))
    if before == "started":
        # Queued or deferred again after a run began: some of its chunks may have run.
        raise Problem(
            409,
            "not-cancellable",
            "Conflict",
            "the job has started (it waits to run again) and can no longer be cancelled;"
            " its report will say what ran",
        )
    if before not in ("queued", "deferred", "cancelled"):
        raise Problem(
            409,
            "not-cancellable",
            "Conflict",
            f"the job is {before} and can no longer be cancelled",
        )
    record = await guard(run_in_threadpool(jobs.get, job_id))
    if record is None:
        raise problems.not_found()
    return record.view()
