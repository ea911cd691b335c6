"""Archive by selection: submit filters (POST); the job's status and cancel are the archive
routes' own (``/vicidial/leads/archive/{job_id}``), since a selection is an archive job.

The same contract as the per-ID route, from the same code (``api.routes.submit.submit_job`` with
``SelectionRequest``): key, rate limit, strict body, office hours, Idempotency-Key, admission. A
key needs the ``selection`` action besides the archive actions it asks for. While the job runs,
its status carries ``progress``; ``DELETE`` stops it after its current batch.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import Owner
from api.routes.archive import ARCHIVE_PATH
from api.routes.submit import submit_job, submit_route
from api.schemas import SELECTION_EXAMPLE, SelectionRequest
from api.services import Svc

SELECTION_PATH = f"{ARCHIVE_PATH}/selection"

router = APIRouter()


@router.post(
    SELECTION_PATH,
    **submit_route(SelectionRequest, SELECTION_EXAMPLE, "Archive every lead a selection picks"),
)
async def submit(owner: Owner, services: Svc, request: Request) -> JSONResponse:
    return await submit_job(owner, services, request, SelectionRequest, ARCHIVE_PATH)
