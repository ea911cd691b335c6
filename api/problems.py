"""RFC 9457 problem details: every error the API returns, rendered in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger("leadarchive.api")


class Problem(Exception):
    """An error answer: status, a stable type slug, a title and a human detail."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {
            "type": f"urn:leadarchive:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return JSONResponse(
            body, status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON
        )


def unauthorized(unknown_key: bool = False) -> Problem:
    """401: no well-formed ``Authorization: Key=...`` header, or (``unknown_key``) a key this
    service does not know. The key itself is never repeated."""
    if unknown_key:
        detail = "this API key is not one of the service's keys (LEADARCHIVE_API_KEYS)"
    else:
        detail = "send the header Authorization: Key=<API key>"
    return Problem(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Key"})


def not_found() -> Problem:
    return Problem(404, "not-found", "Not Found", "no such job (it may have expired)")


def broker_unavailable() -> Problem:
    return Problem(
        503,
        "broker-unavailable",
        "Service Unavailable",
        "the job queue (Redis) is unreachable; nothing was enqueued, try again later",
        headers={"Retry-After": "5"},
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path.

    Starlette answers 405 with the methods of the first route whose path matched, so a path
    served by two routes (GET and DELETE of a job) would claim to allow only one of them. A path
    that a route names literally is that route's alone: ``/vicidial/leads/archive/selection``
    (POST) also fits ``/vicidial/leads/archive/{job_id}``, but is no job's URL.
    """
    literal: set[str] = set()
    templated: set[str] = set()
    # Without the parameters the route that answered 405 put in the scope.
    scope = {**request.scope, "path_params": {}}
    for route in request.app.router.routes:
        match, child = route.matches(scope)
        if match != Match.NONE:
            methods = getattr(route, "methods", None) or set()
            (templated if child.get("path_params") else literal).update(methods)
    return sorted(literal or templated)


def install(app: FastAPI) -> None:
    """Render every error, ours and the framework's, as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return Problem(
            exc.status_code,
            title.lower().replace(" ", "-"),
            title,
            str(exc.detail),
            headers=headers,
        ).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return Problem(
            422,
            "invalid-request",
            "Unprocessable Content",
            "the request is invalid",
            errors=_field_errors(exc),
        ).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the log has it.
        log.error(
            "unexpected error on %s %s",
            request.method,
            request.url.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return Problem(
            500, "internal", "Internal Server Error", "unexpected error; it has been logged"
        ).response()
