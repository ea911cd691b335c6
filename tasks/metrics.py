"""Prometheus metrics of the workers: jobs and leads by outcome, batch durations.

Workers fork, so these are collected in prometheus-client's multiprocess mode: each process writes
to ``PROMETHEUS_MULTIPROC_DIR`` and the worker's main process serves the sum (see worker/).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS = Counter("leadarchive_jobs_total", "Archive jobs finished, by final status.", ("status",))
LEADS = Counter(
    "leadarchive_leads_total",
    "Leads processed, by action and outcome (dry runs included, see the dry_run label).",
    ("action", "outcome", "dry_run"),
)
BATCH_SECONDS = Histogram(
    "leadarchive_batch_duration_seconds",
    "Wall time of one archive batch, from its first statement to its report.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
