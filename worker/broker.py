"""How the worker keeps going when it loses Redis, the broker: two of Celery's extension points.

Celery 5.7 with kombu 5.7's Redis transport can die ("Unrecoverable error: AttributeError:
'NoneType' object has no attribute 'hostname'") when the broker connection breaks while a job
runs. Both paths below end in kombu trying to reach Redis through a connection that is already
closed, which raises AttributeError (not a connection error Celery would log and survive). The
message concerned is never lost: it stays in kombu's set of unacknowledged messages in Redis,
and the visibility-timeout sweep delivers it again. Running a job again is safe (a finished
job's record makes the rerun a no-op; a batch is idempotent).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from celery.worker.request import Request

log = logging.getLogger("leadarchive.worker")


class BrokerConsumer(Consumer):
    """Celery's consumer, except that the connection it drops after a broker error does not try
    to hand its unacknowledged messages back on closing.

    Closing a channel pushes the messages it delivered and that are not yet acknowledged back onto
    the queue. Redis is down at that moment, and if the channel was waiting for messages when the
    connection broke, the first close gives up half-way and the second meets a connection that
    is already torn down, and raises. The handing back is only a shortcut: without it the
    messages come back after the visibility timeout.
    """

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        transport = getattr(self.connection, "_transport", None)
        for channel in getattr(transport, "channels", None) or ():
            channel.do_restore = False
        super().on_connection_error_after_connected(exc)


class JobMessageRequest(Request):
    """Celery's request for one message, except that it leaves alone a message whose channel
    was closed.

    When the worker loses Redis it opens a new broker connection and closes the old one. A job
    that ends afterwards (or hands itself back because the job store was down) would then be
    acknowledged or rejected on the closed channel, where kombu raises, and the worker exits.
    """

    def acknowledge(self) -> None:
        if self._channel_closed():
            self._leave_unacknowledged("acknowledge")
            return
        super().acknowledge()

    def reject(self, requeue: bool = False) -> None:
        if self._channel_closed():
            self._leave_unacknowledged("reject")
            return
        super().reject(requeue=requeue)

    def _channel_closed(self) -> bool:
        channel: Any = self._message.channel
        transport = getattr(channel, "connection", None)
        return bool(getattr(channel, "closed", False)) or getattr(transport, "client", None) is None

    def _leave_unacknowledged(self, action: str) -> None:
        if getattr(self, "acknowledged", False):
            return
        # Nothing more can be done with this message on this channel: the broker restores it.
        self.acknowledged = True
        log.warning(
            "broker connection was replaced; job left for redelivery",
            extra={"job_id": self.id, "action": action},
        )
