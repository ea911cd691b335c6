"""``leadarchive worker``: the worker's command-line options, its metrics server, and its start.

Invariants: ``PROMETHEUS_MULTIPROC_DIR`` is set before ``prometheus_client`` is first imported (the
prefork children write their metrics there, this process serves their sum), so this module imports
nothing of Celery's or the metrics' at the top; a malformed setting or undecided office hours stop
the process before it consumes (``tasks.startup``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

from tasks.startup import service_settings

DEFAULT_METRICS_PORT = 9808


def add_options(parser: argparse.ArgumentParser) -> None:
    """The worker's command-line options."""
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes (default 2)")
    parser.add_argument("--loglevel", default="INFO", help="Celery's log level (default INFO)")
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="the metrics' address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="Prometheus metrics; 0 turns them off",
    )


def run(args: argparse.Namespace) -> int:
    """Serve the metrics and run a Celery worker (events on) on this project's queue."""
    settings = service_settings()
    # Before prometheus_client is first imported: the prefork children write their metrics
    # here, and this process serves their sum.
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="leadarchive-metrics-")
    )
    from tasks.celery_config import QUEUE
    from tasks.logs import configure_logging
    from worker.app import app

    configure_logging(args.loglevel)
    if args.metrics_port:
        serve_metrics(args.metrics_host, args.metrics_port)
    argv = ["worker", "--loglevel", args.loglevel, "--concurrency", str(args.concurrency)]
    # -E: task events on, so Flower sees every task; one queue, this project's own.
    argv += ["-E", "-Q", QUEUE]
    # No mingle: it only syncs Celery's revoked-task lists between workers (cancelling is the job
    # record's business here), and a worker whose consumer restarted while Redis was still down
    # died in its broadcast instead of reconnecting. No gossip: workers need not hear each other.
    argv += ["--without-gossip", "--without-mingle"]
    if settings.embedded:
        # The filesystem broker has no broadcast: no heartbeats either.
        argv += ["--without-heartbeat"]
    app.worker_main(argv)
    return 0


def serve_metrics(host: str, port: int) -> None:
    """Serve the sum of every worker process's metrics on ``host:port``, in a thread."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        # A second worker on the same machine: it still works, its metrics are not served.
        logging.getLogger("leadarchive.worker").warning(
            "metrics not served", extra={"port": port, "error": str(exc)}
        )
