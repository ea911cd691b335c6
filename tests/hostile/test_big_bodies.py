"""A 10 MB body against the real server (``leadarchive api``, uvicorn): refused with 413 after at
most the cap is read, whether the client declares the length or streams it in chunks, and the
server goes on answering. Nothing is enqueued."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator

import psutil
import pytest
import redis
from sqlalchemy import Engine

from testkit.services import Live
from tests.helpers import wait_for

TEN_MB = 10 * 2**20
CAP = 64 * 1024  # the default max_body_bytes
PATH = "/vicidial/leads/archive"


@pytest.fixture(scope="module")
def api(start_live) -> Iterator[tuple[Live, Engine]]:
    with start_live(worker=False) as started:
        yield started


def _head(live: Live, extra: list[str]) -> bytes:
    lines = [
        f"POST {PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{live.port}",
        f"Authorization: Key={live.key}",
        "Content-Type: application/json",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return status, json.loads(rest[:length])


def _body_start() -> bytes:
    return b'{"lead_ids": [' + b"1, " * (TEN_MB // 3)


def _nothing_enqueued(live: Live) -> None:
    client = redis.Redis.from_url(live.redis_url)
    try:
        assert client.llen("leadarchive") == 0
        assert list(client.scan_iter("leadarchive:job:*")) == []
    finally:
        client.close()


def _rss(live: Live) -> int:
    return int(psutil.Process(live.processes["api"].pid).memory_info().rss)


def test_a_declared_10_mb_body_is_refused_before_it_is_sent(api: tuple[Live, Engine]) -> None:
    live, _ = api
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(_head(live, [f"Content-Length: {TEN_MB}"]))
        sock.sendall(_body_start()[:1024])  # 1 KB of the 10 MB, then wait for the answer

        status, problem = _read_answer(sock)

    assert status == 413
    assert problem["status"] == 413 and str(CAP) in problem["detail"]
    _nothing_enqueued(live)


def test_a_streamed_10_mb_body_is_refused_once_past_the_cap(api: tuple[Live, Engine]) -> None:
    """Chunked, so the server cannot know the length: it must answer once past the cap, without
    waiting for the rest. The client offers all 10 MB, a chunk at a time, and stops sending as
    soon as the answer is there; a server that read the whole body first would take it all."""
    live, _ = api
    body = _body_start()[:TEN_MB]
    chunk_size = 16 * 1024
    rss_before = _rss(live)
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(_head(live, ["Transfer-Encoding: chunked"]))
        sent = 0
        for offset in range(0, len(body), chunk_size):
            # Past the cap, a moment for the answer before each further chunk.
            answered, _, _ = select.select([sock], [], [], 0.05 if sent > CAP else 0)
            if answered:
                break
            chunk = body[offset : offset + chunk_size]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed meanwhile
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")

        status, problem = _read_answer(sock)

    assert status == 413, problem
    assert str(CAP) in problem["detail"]
    # Answered once the cap was passed, long before half the body was sent (paced, that half
    # takes 320 chunks and at least 16 s: room for a loaded machine's answer).
    assert CAP < sent < TEN_MB // 2, sent
    assert _rss(live) - rss_before < 8 * 2**20
    _nothing_enqueued(live)


def test_a_whole_10_mb_body_is_413_and_the_server_goes_on(api: tuple[Live, Engine]) -> None:
    """A client that sends everything anyway gets its 413, and the server answers the next."""
    live, _ = api
    body = (_body_start() + b"1]}")[:TEN_MB]
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
        sock.sendall(_head(live, [f"Content-Length: {len(body)}"]) + body)
        status, problem = _read_answer(sock)

    assert status == 413, problem
    client = live.client()
    try:
        assert wait_for(lambda: client.request("GET", "/healthz").status == 200, timeout=30)
    finally:
        client.close()
    _nothing_enqueued(live)
