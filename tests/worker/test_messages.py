"""The message the API pushes onto the Redis queue is the one Celery's producer would send."""

from __future__ import annotations

import base64
import json
import time
import uuid

import redis

from tasks.celery_app import QUEUE, create_celery, enqueue
from tests.conftest import claim_redis_database
from tests.helpers import make_settings

REQUEST = {"insert_leads": True, "update_leads": False, "delete_leads": True, "dry_run": False}


def test_the_pushed_message_and_sent_event_equal_what_send_task_sends(database_url: str) -> None:
    # A database of its own: no test worker may take these messages off the queue.
    with claim_redis_database() as url:
        app = create_celery(make_settings(database_url, url))
        client = redis.Redis.from_url(url)
        events = client.pubsub()
        try:
            events.psubscribe("*celeryev/task.sent")
            assert events.get_message(timeout=5)["type"] == "psubscribe"
            enqueue(app, "job-1", [3, 1, 2], REQUEST)  # Celery's producer
            enqueue(app, "job-1", [3, 1, 2], REQUEST, client)  # one pipelined round trip
            pushed, sent = (json.loads(m) for m in client.lrange(QUEUE, 0, -1))
            published = [events.get_message(timeout=5) for _ in range(2)]
        finally:
            events.close()
            client.close()

    assert _without_tags(pushed) == _without_tags(sent)
    assert pushed["headers"]["task"] == "leadarchive.archive_leads"
    assert pushed["headers"]["id"] == "job-1"
    celerys, ours = published
    assert ours["channel"] == celerys["channel"]
    celerys_event, ours_event = (json.loads(m["data"]) for m in published)
    bodies = [_event_body(e) for e in (celerys_event, ours_event)]
    assert _without_tags(ours_event) == _without_tags(celerys_event)
    assert bodies[0] == bodies[1]
    assert bodies[1]["type"] == "task-sent"
    assert bodies[1]["uuid"] == "job-1"


def _without_tags(message: dict) -> dict:
    """The message without what differs between any two sends: its delivery tag, and an event's
    body (its clock and time)."""
    properties = dict(message["properties"])
    assert uuid.UUID(properties.pop("delivery_tag"))
    stripped = {**message, "properties": properties}
    if properties["delivery_info"]["exchange"] == "celeryev":
        stripped.pop("body")
    return stripped


def _event_body(message: dict) -> dict:
    body = json.loads(base64.b64decode(message["body"]))
    assert isinstance(body.pop("clock"), int)
    assert abs(body.pop("timestamp") - time.time()) < 60
    return body


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


def test_the_lost_message_sweep_finds_queued_and_unacknowledged_messages(
    database_url: str,
) -> None:
    from tasks.celery_app import _MESSAGE_IDS, UNACKED_KEY

    with claim_redis_database() as url:
        app = create_celery(make_settings(database_url, url))
        client = redis.Redis.from_url(url)
        try:
            enqueue(app, "sent-by-celery", [1], REQUEST)
            enqueue(app, "pushed", [2], REQUEST, client)
            # What kombu keeps for a message a worker has taken: [message, exchange, key].
            taken = client.rpop(QUEUE)
            client.hset(UNACKED_KEY, "tag-1", json.dumps([json.loads(taken), "", QUEUE]))
            found = client.eval(_MESSAGE_IDS, 2, QUEUE, UNACKED_KEY)
        finally:
            client.close()

    assert sorted(raw.decode() for raw in found) == ["pushed", "sent-by-celery"]
