"""Prometheus metrics of the API process (``/metrics``), named for Grafana's conventions."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "leadarchive_http_requests_total",
    "HTTP requests by route template, method and status code.",
    ("route", "method", "status"),
    registry=REGISTRY,
)
LATENCY = Histogram(
    "leadarchive_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ("route", "method"),
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
JOBS_SUBMITTED = Counter(
    "leadarchive_jobs_submitted_total", "Archive jobs accepted and enqueued.", registry=REGISTRY
)


def install(app: FastAPI) -> None:
    """Count and time every request by its route template (never by raw path: IDs vary)."""

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        return response
