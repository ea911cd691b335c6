"""The message the API pushes onto the Redis queue is the one Celery's producer would send."""

from __future__ import annotations

import json
import uuid

import redis

from tasks.celery_app import QUEUE, create_celery, enqueue
from tests.conftest import claim_redis_database
from tests.helpers import make_settings

REQUEST = {"insert_leads": True, "update_leads": False, "delete_leads": True, "dry_run": False}


def test_the_pushed_message_equals_what_send_task_sends(database_url: str) -> None:
    # A database of its own: no test worker may take these messages off the queue.
    with claim_redis_database() as url:
        app = create_celery(make_settings(database_url, url))
        client = redis.Redis.from_url(url)
        try:
            enqueue(app, "job-1", [3, 1, 2], REQUEST)  # Celery's producer
            enqueue(app, "job-1", [3, 1, 2], REQUEST, client)  # one LPUSH
            pushed, sent = (json.loads(m) for m in client.lrange(QUEUE, 0, -1))
        finally:
            client.close()

    tags = [m["properties"].pop("delivery_tag") for m in (pushed, sent)]
    assert pushed == sent
    assert len({uuid.UUID(tag) for tag in tags}) == 2
    assert pushed["headers"]["task"] == "leadarchive.archive_leads"
    assert pushed["headers"]["id"] == "job-1"


def test_the_broker_sweeps_for_lost_messages_every_5_s_under_a_short_lock(
    database_url: str,
) -> None:
    """A worker killed mid-sweep must not stop every other worker's sweeps for long."""
    with claim_redis_database() as url:
        app = create_celery(make_settings(database_url, url))
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            assert channel.visibility_timeout == 30
            assert channel.unacked_mutex_expire == 10
            assert channel.unacked_restore_interval * channel.unacked_restore_throttle == 5
