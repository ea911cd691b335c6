"""Load, the CI size of ``bench/load.py`` (5,000 submissions there, ``COUNT`` here): submissions as
fast as the real API takes them, with the documented default rate limit on.

Every answer is 202 or a documented refusal (429 here), every accepted job ends ``succeeded``, no
lead is lost (each is live or identically archived), and once the job records expire (a 5 s result
lifetime) the Redis database holds as many keys as before and about as many bytes. (Its server's
``used_memory`` is not judged: other test runs share this Redis.)
"""

from __future__ import annotations

from datetime import timedelta

from bench.load import load_and_expire, warm_up
from tests.hostile.conftest import LEADS

COUNT = 800
TTL = timedelta(seconds=5)


def test_submissions_as_fast_as_the_api_takes_them_all_end_and_expire(start_live) -> None:
    with start_live(result_ttl="5s", rate_limit="100/second") as (live, engine):
        warm_up(live, 10 * LEADS)
        report = load_and_expire(
            live, engine, count=COUNT, ttl=TTL, id_space=2 * LEADS, connections=16
        )
        log = live.log_text()
    print(
        f"load: {report.sent} sent, {report.statuses}, {report.accepted} accepted,"
        f" final {report.final}, leads {report.leads_checked} checked,"
        f" {len(report.leads_lost)} lost, Redis {report.memory_baseline} ->"
        f" {report.memory_peak} -> {report.memory_after_expiry}"
    )

    assert report.sent == COUNT
    assert report.undocumented == {}, report.statuses
    assert report.statuses.get("202", 0) > 0
    assert report.statuses.get("429", 0) > 0  # the default limit was reached, and answered so
    assert report.final == {"succeeded": report.accepted}, report.failed_examples
    assert report.not_final == report.lost_jobs == 0
    assert report.leads_checked == LEADS
    assert report.leads_lost == []
    # The records existed, took memory, and are gone.
    assert report.memory_peak.keys > report.memory_baseline.keys + report.accepted // 2
    assert report.memory_peak.database_bytes > report.memory_baseline.database_bytes + 100_000
    assert report.records_left == 0
    assert report.memory_after_expiry.keys <= report.memory_baseline.keys
    assert report.memory_back_near_baseline, (report.memory_baseline, report.memory_after_expiry)
    assert "unexpected error" not in log and "Traceback" not in log
