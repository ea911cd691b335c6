"""A lean HTTP/1.1 client, blocking (``RawHTTP``) and asyncio (``AsyncRawHTTP``), for tests and
benchmarks that talk to a real `leadarchive api`.

httpx costs this machine about 1.1-1.6 ms of CPU per request, taken from the same two cores as
the API; these cost a fraction of that, so the API gets the CPU. One keep-alive connection each,
one request at a time; enough for this API's answers (fixed length or chunked), nothing more.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    """One HTTP answer: status, headers (names in lower case) and the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers


class RawHTTP:
    """A blocking keep-alive HTTP/1.1 client for one server (enough for this API's answers)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buffer = None, bytearray()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=60)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self._buffer += data

    def _until(self, sock: socket.socket, separator: bytes) -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            self._fill(sock)
        data = bytes(self._buffer[: end + len(separator)])
        del self._buffer[: end + len(separator)]
        return data

    def _exactly(self, sock: socket.socket, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill(sock)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        for attempt in (1, 2):
            sock = self._connect()
            try:
                sock.sendall(_request_bytes(method, path, self.host, self.headers, body))
                status, headers = _parse_head(self._until(sock, b"\r\n\r\n"))
            except (EOFError, ConnectionError):
                # A keep-alive connection the server closed while idle: once more, afresh.
                self.close()
                if attempt == 2:
                    raise
                continue
            if headers.get("transfer-encoding", "").lower() == "chunked":
                payload = bytearray()
                while size := int(self._until(sock, b"\r\n").strip(), 16):
                    payload += self._exactly(sock, size + 2)[:-2]
                self._until(sock, b"\r\n")
                data = bytes(payload)
            else:
                data = self._exactly(sock, int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                self.close()
            return Answer(status, headers, data)
        raise AssertionError("unreachable")  # pragma: no cover


class AsyncRawHTTP:
    """The asyncio twin of ``RawHTTP``: one keep-alive connection, one request at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._streams = reader, writer
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        self._streams = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        reader, writer = await self.connect()
        try:
            writer.write(_request_bytes(method, path, self.host, self.headers, body))
            status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            if headers.get("transfer-encoding", "").lower() == "chunked":
                payload = bytearray()
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    payload += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
                data = bytes(payload)
            else:
                data = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            self.close()  # the next request opens a fresh connection
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, headers, data)
