"""The OpenAPI document: every answer each operation gives, errors included.

FastAPI documents only the success answer (and a 422 shaped like its own validation errors, which
this API never sends). Clients and fuzzers read this document, so it states what really comes back:
each operation's problem+json errors with their headers, the job status body, and this server's
limit on lead IDs. What FastAPI generates (the ``ApiKey`` scheme, from ``api.auth.Owner``; the
routes' own declarations) is left as generated; only what it cannot generate is added here.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.problems import PROBLEM_JSON
from api.schemas import Health, JobView, ProblemDetails, Readiness

_REF = "#/components/schemas/{model}"

_ERRORS: dict[int, str] = {
    400: "The body is not JSON or not a JSON object, or the Idempotency-Key is malformed",
    401: "Missing, malformed or unknown API key",
    403: "The API key may not use an action the request asks for (scoped keys; see action)",
    404: "No such job for this key (unknown, expired, or submitted with another key)",
    409: "The job has started or ended and can no longer be cancelled",
    413: "The body is larger than the configured cap",
    415: "The Content-Type is not application/json",
    422: "Invalid fields, a member named twice, more lead IDs than the limit, no action true, or an"
    " Idempotency-Key reused with a different body",
    429: "Too many requests for this key, or too many of its jobs not finished yet",
    503: "Inside office hours (see opens_at), the job store is nearly full (store-full), or the"
    " job queue (Redis) is unreachable",
}
_RETRY_AFTER = {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 0}}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Key"]}}},
    429: {"Retry-After": {"required": True, **_RETRY_AFTER}},
    503: {"Retry-After": {"required": True, **_RETRY_AFTER}},
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of these problem+json error answers, for a route decorator."""
    return {
        status: {
            "description": _ERRORS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": _REF.format(model="ProblemDetails")}}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status in statuses
    }


def body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A JSON answer documented by ``model`` (without FastAPI validating the returned dict)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }


def install(app: FastAPI, max_lead_ids: int) -> None:
    """Serve the completed document at /openapi.json (and so in /docs).

    ``max_lead_ids`` is a setting: the document states this server's, and ``leadarchive submit``
    reads it to size its batches.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = _complete(document, max_lead_ids)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(document: dict[str, Any], max_lead_ids: int) -> dict[str, Any]:
    # The routes' declarations are shared by every app: this app's document gets its own copy.
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(m, "serialization") for m in (ProblemDetails, JobView, Health, Readiness)],
        ref_template=_REF,
    )
    schemas.update(definitions["$defs"])
    for operations in document["paths"].values():
        for operation in operations.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                lead_ids = content.get("schema", {}).get("properties", {}).get("lead_ids")
                if lead_ids is not None:
                    lead_ids["maxItems"] = max_lead_ids
            answer = operation.get("responses", {}).get("422", {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                # FastAPI's own 422 for path parameters, which a string job_id never fails.
                del operation["responses"]["422"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document
