"""Request bodies read strictly: JSON only, under a size cap, every object naming a member once.

Read by hand rather than by FastAPI, so that the cap holds while the body streams in (413 before
the whole body is buffered), and so that a member named twice is refused: json.loads keeps the
last value, another parser (a proxy, a log reader) may keep the first, so
``{"delete_leads": false, "delete_leads": true}`` is read as neither (422, naming the member).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from api.problems import Problem


async def read_json_object(request: Request, cap: int) -> dict[str, Any]:
    """The body as a JSON object, or the problem (415, 413, 400, 422) that says why not."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "send the body as Content-Type: application/json",
        )
    too_large = Problem(
        413, "body-too-large", "Content Too Large", f"the body is larger than {cap} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_large
    named_twice: list[_Twice] = []

    def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                twice = _Twice(key)
                named_twice.append(twice)
                return twice
            obj[key] = value
        return obj

    try:
        payload = json.loads(body.decode("utf-8"), object_pairs_hook=unique_members)
    except (ValueError, RecursionError):
        raise Problem(400, "malformed-json", "Bad Request", "the body is not valid JSON") from None
    if named_twice:
        raise _named_twice(payload)
    if not isinstance(payload, dict):
        raise Problem(400, "not-an-object", "Bad Request", "the body must be a JSON object")
    return payload


class _Twice(dict[str, Any]):
    """Stands, in the parsed document, for an object that named ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key


def _named_twice(document: Any) -> Problem:
    """The 422 for the first object (in document order) that names a member twice."""
    loc: list[str | int] = []
    # Depth first, without recursion (the parser accepted the nesting; this must not fail on it).
    stack: list[tuple[list[str | int], Any]] = [([], document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Twice):
            loc = [*path, node.key]
            break
        if isinstance(node, dict):
            children: list[tuple[str | int, Any]] = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        stack.extend(([*path, name], child) for name, child in reversed(children))
    name = json.dumps(loc[-1])
    return Problem(
        422,
        "duplicate-key",
        "Unprocessable Content",
        f"the body names {name} more than once in one object",
        errors=[{"loc": loc, "msg": f"{name} is named more than once", "type": "duplicate_key"}],
    )
