"""Submitting a job, whatever its kind: the one code path both job routes share.

``submit_job`` checks, in this order: the key (the route's ``Owner``), the rate limit, the body
(media type, size, JSON, fields, the lead ID limit: the key's own if lower), the actions the
key may use (``authorize_request``, 403),
office hours, the Idempotency-Key; only then is anything written, and a job whose message cannot
be enqueued is removed again. It answers 202 with the job's status URL under the route's path,
in ``Location`` too. ``submit_route`` is the decorator's documentation of all of that, for a
request model.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from api import metrics, openapi
from api.auth import require_action, scope_of
from api.body import read_json_object
from api.problems import Problem
from api.schemas import Accepted
from api.services import Services, guard
from tasks.admin_log import client_address
from tasks.errors import IdempotencyConflict, StoreFullError, TooManyPendingJobs
from tasks.publishing import publish
from tasks.records import now_iso
from tasks.requests import JobRequest, RestoreRequest, SelectionRequest
from tasks.scopes import ARCHIVE_REQUEST_ACTIONS

log = logging.getLogger("leadarchive.api")

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def submit_route(model: type[BaseModel], example: dict[str, Any], summary: str) -> dict[str, Any]:
    """The keyword arguments of a job route's ``router.post``: its answers and body, documented."""
    return {
        "status_code": 202,
        "response_model": Accepted,
        "summary": summary,
        "responses": {
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
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": model.model_json_schema(),
                        "example": example,
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
    }


def authorize_request(owner: str, job_request: JobRequest) -> None:
    """Refuse (403, naming the action) a request the key ``owner`` may not make (scoped keys).

    Called for every kind of job once its body is valid and before anything is written. An
    archive request needs ``archive`` for insert and update and ``delete`` for delete; a
    selection needs ``selection`` too; a restore needs ``restore``. A key limited to lists may
    do each: the job's record keeps the lists, its batches report a lead of another list
    ``forbidden``, and a selection walks only those lists.
    """
    if isinstance(job_request, RestoreRequest):
        require_action(owner, "restore")
        return
    needed = [ARCHIVE_REQUEST_ACTIONS[a] for a in job_request.requested()]
    if isinstance(job_request, SelectionRequest):
        needed.insert(0, "selection")
    require_action(owner, *needed)


async def submit_job(
    owner: str,
    services: Services,
    request: Request,
    model: type[JobRequest],
    path: str,
) -> JSONResponse:
    """Validate, admit and enqueue one job of ``model``'s kind; 202 with its URL under ``path``."""
    settings, rt = services.settings, services.runtime
    if services.limiter.enabled:
        await guard(run_in_threadpool(services.limiter.check, owner))
    payload = await read_json_object(request, settings.max_body_bytes)
    job_request = validate(model, payload, scope_of(owner).lead_limit(settings.max_lead_ids))
    authorize_request(owner, job_request)
    now = rt.clock()
    opens_at = rt.office_hours.window_opens_at(now)
    if opens_at is not None:
        raise Problem(
            503,
            "office-hours",
            "Service Unavailable",
            "archiving and restoring run outside office hours only",
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
            _create_and_enqueue, services, owner, job_request, idempotency_key, client_ip
        )
    )
    url = f"{path}/{job_id}"
    return JSONResponse(
        Accepted(job_id=job_id, status="queued", status_url=url).model_dump(),
        status_code=202,
        headers={"Location": url},
    )


def _create_and_enqueue(
    services: Services,
    owner: str,
    job_request: JobRequest,
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
        except Exception:
            if rt.jobs.forget(job_id):
                raise
            # The send failed after the lost-message sweep had sent the job and a worker began
            # it: the job exists and runs, so the answer is its ID, not an error.
            log.warning("job sent by the sweep while its send failed", extra={"job_id": job_id})
        except BaseException:
            rt.jobs.forget(job_id)
            raise
        metrics.JOBS_SUBMITTED.inc()
        log.info("job queued", extra={"job_id": job_id, "key_name": owner})
    return job_id


def validate(model: type[JobRequest], payload: dict[str, Any], limit: int) -> JobRequest:
    """The request ``payload`` makes, or 422 naming every invalid field (or the lead ID limit)."""
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
        return model.model_validate(payload)
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
