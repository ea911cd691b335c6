"""Prometheus metrics of the API process (``/metrics``), named for Grafana's conventions."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
STORE_FULL = Counter(
    "leadarchive_store_full_total",
    "Submissions refused because the job store (Redis) kept its room for accepted jobs.",
    registry=REGISTRY,
)


class _Measure:
    """Pure ASGI middleware (no per-request task and body copy, unlike @app.middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            LATENCY.labels(route, method).observe(time.perf_counter() - started)
            REQUESTS.labels(route, method, str(status)).inc()


def install(app: FastAPI) -> None:
    """Count and time every request by its route template (never by raw path: IDs vary)."""
    app.add_middleware(_Measure)
