"""Sending a job's task message: ``publish``, the one way in, whichever path carries it.

Two paths, one message. With the broker's Redis client at hand, the message Celery would send (and
its ``task-sent`` event, for Flower) is pushed in one pipelined round trip; otherwise Celery's
producer sends it (``send_task``). ``tests/worker/test_messages.py`` holds the two equal field by
field, for the kombu and Celery versions pyproject.toml pins: the pushed envelope is kombu's Redis
transport's own format, and the sweeps (``tasks.sweeps``) read the task ID out of it.

Invariant: the task ID is the job ID, so Flower shows both as one.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import redis
from celery import Celery
from celery.events import Event
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu import serialization

from tasks.requests import JobRequest

# The one queue: the API sends to it, the worker consumes it (`-Q`), the sweeps read it.
QUEUE = "leadarchive"
EVENT_EXCHANGE = "celeryev"


def publish(
    app: Celery, job_id: str, request: JobRequest, broker: redis.Redis | None = None
) -> None:
    """Send the task that runs ``request`` as job ``job_id``.

    With ``broker`` (the Redis database of ``broker_url``), the message Celery would send is
    pushed onto the queue's list in one call; otherwise Celery's producer sends it.
    """
    kwargs = {"job_id": job_id, **request.payload()}
    if broker is None:
        app.send_task(request.task_name, kwargs=kwargs, task_id=job_id, queue=QUEUE)
        return
    task, sent_event = _redis_messages(app, request.task_name, job_id, kwargs)
    pipe = broker.pipeline(transaction=False)  # one round trip
    pipe.lpush(QUEUE, task)
    if sent_event is not None:
        db = broker.connection_pool.connection_kwargs.get("db", 0)
        pipe.publish(f"/{db}.{EVENT_EXCHANGE}/task.sent", sent_event)
    pipe.execute()


def _redis_messages(
    app: Celery, task_name: str, task_id: str, kwargs: dict[str, Any]
) -> tuple[str, str | None]:
    """The task as kombu's Redis transport stores a message sent to ``QUEUE``, and its
    ``task-sent`` event as published to Flower (None when sent events are off).

    ``send_task`` costs the API more CPU than all the rest of a submission (a Redis client object
    per publish, a lookup of the queue's binding, the producer's and event dispatcher's
    machinery). Celery builds the task message and the event here; only kombu's envelopes (the
    JSON that the Redis channel's ``_put`` pushes and ``_put_fanout`` publishes) are written out.
    """
    sent_events = bool(app.conf.task_send_sent_event)
    message = app.amqp.create_task_message(
        task_id,
        task_name,
        (),
        kwargs,
        reply_to=app.thread_oid,
        ignore_result=None,
        create_sent_event=sent_events,
    )
    task = _envelope(
        message.body,
        message.headers,
        {**message.properties, "delivery_mode": 2},  # persistent
        exchange="",
        routing_key=QUEUE,
    )
    if message.sent_event is None:
        return task, None
    hostname = anon_nodename()
    event = Event(
        "task-sent",
        hostname=hostname,
        utcoffset=utcoffset(),
        pid=os.getpid(),
        clock=app.clock.forward(),
        **message.sent_event,
        queue=QUEUE,
        exchange="",
        routing_key=QUEUE,
    )
    sent = _envelope(
        event,
        {"hostname": hostname},
        {"delivery_mode": 1},  # transient, as Celery sends events
        exchange=EVENT_EXCHANGE,
        routing_key="task.sent",
    )
    return task, sent


def _envelope(
    body: Any, headers: dict[str, Any], properties: dict[str, Any], exchange: str, routing_key: str
) -> str:
    """A message in kombu's Redis envelope: JSON body, base64-encoded, with its delivery info."""
    content_type, encoding, data = serialization.dumps(  # type: ignore[no-untyped-call]
        body, serializer="json"
    )
    return json.dumps(
        {
            "body": base64.b64encode(data.encode(encoding)).decode("ascii"),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": {
                **properties,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
