"""A worker outlives a Redis outage by itself and runs the next job."""

from __future__ import annotations

import time

from testkit.faults.scenarios import Servers
from testkit.polling import wait_until


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


def test_a_job_whose_outcome_could_not_be_recorded_runs_again_and_ends(servers: Servers) -> None:
    """Redis goes down while the batch runs, so its outcome cannot be written: the job must not
    be left `running` forever once Redis is back."""
    with servers.stack("record-outage") as stack:
        original = stack.seed(50)
        stack.start_api()
        stack.start_worker(concurrency=1)
        with stack.connect() as dialer:
            # A "dialer" read lock pins the batch at its first delete, after it read its record.
            dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
            try:
                job_id = stack.submit_ok(sorted(original))
                wait_until(lambda: stack.statuses([job_id])[job_id] == "running", 30, "the job")
                wait_until(lambda: stack.lock_holder_now(), 30, "the batch to hold its lock")
                servers.redis.stop()
            finally:
                dialer.exec_driver_sql("UNLOCK TABLES")
        # The batch ends meanwhile and cannot record it.
        time.sleep(3)
        servers.redis.start()
        statuses = stack.wait_final([job_id], timeout=60)

        assert statuses == {job_id: "succeeded"}, stack.log_tail()
        with stack.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM vicidial_list").scalar() == 0


def test_a_worker_waiting_for_jobs_while_one_runs_outlives_a_redis_outage(
    servers: Servers,
) -> None:
    """Two pool processes, one job running: the worker is waiting on Redis for a second job
    when Redis goes away, with the first job's message unacknowledged. Celery 5.7 closing that
    connection died here ("Unrecoverable error: AttributeError ... 'hostname'"), and again when
    the job ended and was acknowledged on the closed connection (``worker.broker``)."""
    with servers.stack("outage-while-waiting") as stack:
        leads = sorted(stack.seed(100))
        stack.start_api()
        worker = stack.start_worker(concurrency=2)
        log = stack.workdir / "workers.log"
        with stack.connect() as dialer:
            # A "dialer" read lock pins the batch at its first delete.
            dialer.exec_driver_sql("LOCK TABLES vicidial_list READ")
            try:
                first = stack.submit_ok(leads[:50])
                wait_until(lambda: stack.lock_holder_now(), 30, "the batch to hold its lock")
                servers.redis.stop()
                wait_until(
                    lambda: "Connection to broker lost" in log.read_text(errors="replace"),
                    30,
                    "the worker to notice that Redis is gone",
                )
            finally:
                dialer.exec_driver_sql("UNLOCK TABLES")
        time.sleep(3)  # the batch ends while Redis is down
        servers.redis.start()
        statuses = stack.wait_final([first], timeout=90)
        second = stack.submit_ok(leads[50:])
        statuses |= stack.wait_final([second], timeout=60)

        whole_log = log.read_text(errors="replace")
        assert "Unrecoverable error" not in whole_log, stack.log_tail()
        assert worker.is_running() and worker.status() != "zombie", stack.log_tail()
        assert statuses == {first: "succeeded", second: "succeeded"}, stack.log_tail()
        with stack.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM vicidial_list").scalar() == 0
