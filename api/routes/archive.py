"""Archive jobs: submit leads (POST), read a job's status and report (GET), cancel it (DELETE;
a running selection, ``api.routes.selection``, stops after its current batch: 202).

Every route takes an ``Owner``: a job is visible only to the key that submitted it, and any other
key is told 404, as if it did not exist. A job ID that is not of the form ``tasks.jobs.new_job_id``
gives is answered 404 before Redis is asked. Submitting is ``api.routes.submit.submit_job``, shared
with every kind of job: it checks, in this order, the key, the rate limit, the body (media type,
size, JSON, fields), office hours, the Idempotency-Key; only then is anything written, and a job
whose message cannot be enqueued is removed again.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api import openapi, problems
from api.auth import Owner
from api.openapi import body
from api.problems import Problem
from api.routes.submit import submit_job, submit_route
from api.schemas import SEED_EXAMPLE, ArchiveRequest, JobView
from api.services import Svc, guard
from tasks.lifecycle import record_cancelled_selection
from tasks.records import JobRecord
from tasks.requests import SelectionRequest

log = logging.getLogger("leadarchive.api")

ARCHIVE_PATH = "/vicidial/leads/archive"
# What tasks.jobs.new_job_id makes: secrets.token_urlsafe(16), 22 URL-safe base64 characters.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")

router = APIRouter()


@router.post(ARCHIVE_PATH, **submit_route(ArchiveRequest, SEED_EXAMPLE, "Submit leads to archive"))
async def submit(owner: Owner, services: Svc, request: Request) -> JSONResponse:
    return await submit_job(owner, services, request, ArchiveRequest, ARCHIVE_PATH)


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


# The cancel route's answers, under every path it serves (a job's URL under any kind's path).
CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: body(JobView, "The cancelled job"),
    202: body(JobView, "A running selection: it stops after its current batch"),
    **openapi.problems(401, 404, 409, 503),
}


@router.delete(
    f"{ARCHIVE_PATH}/{{job_id}}",
    summary="Cancel a job that has not started, or stop a selection after its current batch",
    responses=CANCEL_RESPONSES,
)
async def cancel(job: OwnedJob, job_id: JobId, services: Svc) -> JSONResponse:
    # The job first: its key is checked (401) before its ID (404).
    jobs = services.runtime.jobs
    # A selection stops between two batches, whether it has run or not (its record's kind
    # never changes, so reading it before the cancel is safe).
    between_batches = isinstance(job.request, SelectionRequest)
    before = await guard(run_in_threadpool(jobs.cancel, job_id, between_batches=between_batches))
    if before == "started":
        # Queued or deferred again after a run began: some of its chunks may have run.
        raise Problem(
            409,
            "not-cancellable",
            "Conflict",
            "the job has started (it waits to run again) and can no longer be cancelled;"
            " its report will say what ran",
        )
    if before not in ("queued", "deferred", "cancelled", "stopping"):
        raise Problem(
            409,
            "not-cancellable",
            "Conflict",
            f"the job is {before} and can no longer be cancelled",
        )
    record = await guard(run_in_threadpool(jobs.get, job_id))
    if record is None:
        raise problems.not_found()
    if between_batches and before in ("queued", "deferred"):
        # Cancelled between two runs: no run will write its admin-log row, so this does.
        await guard(run_in_threadpool(record_cancelled_selection, services.runtime, record))
    return JSONResponse(record.view(), status_code=202 if before == "stopping" else 200)
