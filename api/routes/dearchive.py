"""Restore jobs (Vicidial's ``lead_dearchive``): submit leads (POST), read a job's status (GET),
cancel it (DELETE).

The same contract as the archive routes, from the same code: submitting is
``api.routes.submit.submit_job`` with ``RestoreRequest`` (the same key, rate limit, strict body,
lead ID limit, office hours, Idempotency-Key and admission), and the status and cancel routes are
the archive routes' own handlers under this path (a job is visible only to its key). Each lead's
outcome is under ``restore`` in the job's result.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import openapi
from api.auth import Owner
from api.openapi import body
from api.routes import archive
from api.routes.submit import submit_job, submit_route
from api.schemas import RESTORE_EXAMPLE, JobView, RestoreRequest
from api.services import Svc

DEARCHIVE_PATH = "/vicidial/leads/dearchive"

router = APIRouter()


@router.post(
    DEARCHIVE_PATH,
    **submit_route(RestoreRequest, RESTORE_EXAMPLE, "Submit archived leads to restore"),
)
async def submit(owner: Owner, services: Svc, request: Request) -> JSONResponse:
    return await submit_job(owner, services, request, RestoreRequest, DEARCHIVE_PATH)


router.add_api_route(
    f"{DEARCHIVE_PATH}/{{job_id}}",
    archive.status,
    methods=["GET"],
    summary="A restore job's status and, when done, its report",
    responses={200: body(JobView, "The job"), **openapi.problems(401, 404, 503)},
)
router.add_api_route(
    f"{DEARCHIVE_PATH}/{{job_id}}",
    archive.cancel,
    methods=["DELETE"],
    summary="Cancel a restore job that has not started",
    responses=archive.CANCEL_RESPONSES,
)
