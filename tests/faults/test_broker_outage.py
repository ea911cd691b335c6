"""A worker outlives a Redis outage by itself and runs the next job."""

from __future__ import annotations

import time

from tests.faults.scenarios import Servers


def test_a_worker_reconnects_after_redis_was_down_for_seconds(servers: Servers) -> None:
    with servers.stack("broker-outage") as stack:
        original = stack.seed(20)
        stack.start_api()
        worker = stack.start_worker(concurrency=1)
        servers.redis.stop()
        # Longer than a couple of reconnect attempts (kombu waits 2 s, then 4 s, ...).
        time.sleep(5)
        servers.redis.start()
        job_id = stack.submit_ok(sorted(original))
        statuses = stack.wait_final([job_id], timeout=60)

        assert worker.is_running() and worker.status() != "zombie", stack.log_tail()
        assert statuses == {job_id: "succeeded"}, stack.log_tail()
        with stack.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM vicidial_list").scalar() == 0
