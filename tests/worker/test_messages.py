"""The message the API pushes onto the Redis queue is the one Celery's producer would send."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import timedelta

import pytest
import redis
from celery import Celery
from celery.worker.request import Request
from kombu import Connection, Message
from kombu import Queue as KombuQueue

from tasks.celery_config import QUEUE, create_celery
from tasks.publishing import publish
from tasks.requests import ArchiveRequest
from tests.conftest import claim_redis_database
from tests.helpers import make_settings
from worker.broker import JobMessageRequest

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
            publish(
                app, "job-1", ArchiveRequest(lead_ids=[3, 1, 2], **REQUEST)
            )  # Celery's producer
            publish(
                app, "job-1", ArchiveRequest(lead_ids=[3, 1, 2], **REQUEST), client
            )  # one pipelined round trip
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


def test_the_lost_message_sweep_reads_the_next_and_the_unacknowledged_messages(
    database_url: str,
) -> None:
    """The sweep's two scripts find task IDs in both kinds of envelope (Celery's own and the
    one the service pushes), at the queue's consuming end and among the messages kombu itself
    recorded as unacknowledged, and tell one a worker took within the lease from an older one
    (kombu's index of when each was taken) or one of unknown age."""
    from tasks.sweeps import _UNACKED_IDS, _WAITING_NEXT, UNACKED_INDEX_KEY, UNACKED_KEY

    with claim_redis_database() as url:
        app = create_celery(make_settings(database_url, url))
        client = redis.Redis.from_url(url)
        try:
            publish(app, "first", ArchiveRequest(lead_ids=[1], **REQUEST), client)
            publish(app, "sent-by-celery", ArchiveRequest(lead_ids=[1], **REQUEST))
            publish(app, "pushed", ArchiveRequest(lead_ids=[2], **REQUEST), client)
            with app.connection_for_write() as connection:
                # A worker takes the next message: kombu records it as unacknowledged.
                taken = connection.default_channel.basic_get(QUEUE, no_ack=False)
                assert taken is not None and taken.headers["id"] == "first"
                # One message read at the consuming end, plus one per unacknowledged message.
                waiting = client.eval(_WAITING_NEXT, 2, QUEUE, UNACKED_KEY, "1")
                keys = (UNACKED_KEY, UNACKED_INDEX_KEY)
                just_taken = client.eval(_UNACKED_IDS, 2, *keys, "10")
                tag = taken.delivery_tag
                client.zadd(UNACKED_INDEX_KEY, {tag: client.zscore(UNACKED_INDEX_KEY, tag) - 11})
                taken_long_ago = client.eval(_UNACKED_IDS, 2, *keys, "10")
                client.zrem(UNACKED_INDEX_KEY, tag)
                unknown_age = client.eval(_UNACKED_IDS, 2, *keys, "10")
        finally:
            client.close()

    assert [raw if isinstance(raw, int) else raw.decode() for raw in waiting] == [
        2,
        "pushed",
        "sent-by-celery",
    ]
    assert [raw.decode() for raw in just_taken] == ["first", "1"]
    assert [raw.decode() for raw in taken_long_ago] == ["first", "0"]
    assert [raw.decode() for raw in unknown_age] == ["first", "1"]


@pytest.mark.parametrize("action", ["acknowledge", "reject"])
def test_a_job_ending_after_the_broker_connection_was_replaced_is_delivered_again(
    database_url: str, action: str
) -> None:
    """A worker that lost Redis closes its old connection and opens a new one; a job that ends
    afterwards is acknowledged (or handed back) on the closed channel. The worker must live
    on, and the message must come back from the broker's unacknowledged set, not vanish."""
    with claim_redis_database() as url:
        settings = make_settings(
            database_url,
            url,
            visibility_timeout=timedelta(seconds=2),
            task_time_limit=timedelta(seconds=1),
        )
        app = create_celery(settings)
        request, message = _on_a_closed_channel(app, JobMessageRequest)

        if action == "acknowledge":
            request.acknowledge()
        else:
            request.reject(requeue=True)

        client = redis.Redis.from_url(url)
        try:
            assert client.llen(QUEUE) == 0
            assert client.hkeys("unacked") == [message.delivery_tag.encode()]
            time.sleep(2.5)  # past the visibility timeout
            with app.connection_for_read() as new:
                new.default_channel.qos.restore_visible()
                again = _take_one(new)
                assert again.headers["id"] == "job-1"
                again.ack()
            assert client.hlen("unacked") == 0
        finally:
            client.close()


def test_celerys_own_request_dies_on_a_closed_channel(database_url: str) -> None:
    """Why JobMessageRequest exists: kombu's Redis transport raises AttributeError (not a
    connection error Celery would log and survive) on a channel whose connection was closed.
    If this starts failing, kombu fixed it and the subclass can go."""
    with claim_redis_database() as url:
        request, _ = _on_a_closed_channel(create_celery(make_settings(database_url, url)), Request)
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
            request.reject(requeue=True)


def _on_a_closed_channel(app: Celery, request_class: type[Request]) -> tuple[Request, Message]:
    """A job's message taken by a worker, as ``request_class`` sees it, after the worker's
    consumer lost Redis and closed the connection the message came on.

    Closing a channel hands its unacknowledged messages back, which fails while Redis is down; a
    channel told not to hand them back is left in the same state (its pools dropped, the message
    still in the unacknowledged set), with this test's Redis up."""
    publish(app, "job-1", ArchiveRequest(lead_ids=[1], **REQUEST))
    connection = app.connection_for_read()
    message = _take_one(connection)
    request = request_class(
        message,
        app=app,
        on_ack=message.ack_log_error,
        on_reject=message.reject_log_error,
        connection_errors=connection.connection_errors,
    )
    message.channel.do_restore = False
    connection.close()
    return request, message


def _take_one(connection: Connection) -> Message:
    taken: list[Message] = []
    with connection.Consumer(
        [KombuQueue(QUEUE)], callbacks=[lambda _body, m: taken.append(m)], accept=["json"]
    ):
        connection.drain_events(timeout=5)
    assert len(taken) == 1
    return taken[0]
