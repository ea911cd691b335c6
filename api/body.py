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
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen: set[str] = set()
        keys_twice: dict[str, None] = {}  # ordered, each once
        for key, _ in pairs:
            if key in seen:
                keys_twice[key] = None
            seen.add(key)
        twice = _Twice(keys_twice)
        twice.update(obj)
        named_twice.append(twice)
        return twice

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
    """Stands, in the parsed document, for an object that names ``keys`` more than once."""

    def __init__(self, keys: dict[str, None]) -> None:
        super().__init__()
        self.keys_twice = list(keys)


def _named_twice(document: Any) -> Problem:
    """The 422 naming every member named twice, in document order, each with its place."""
    locs: list[list[str | int]] = []
    # Depth first, without recursion (the parser accepted the nesting; this must not fail on it).
    stack: list[tuple[list[str | int], Any]] = [([], document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Twice):
            locs.extend([*path, key] for key in node.keys_twice)
        if isinstance(node, dict):
            children: list[tuple[str | int, Any]] = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        stack.extend(([*path, name], child) for name, child in reversed(children))
    names = ", ".join(dict.fromkeys(json.dumps(loc[-1]) for loc in locs))
    return Problem(
        422,
        "duplicate-key",
        "Unprocessable Content",
        f"the body names {names} more than once in one object",
        errors=[
            {
                "loc": loc,
                "msg": f"{json.dumps(loc[-1])} is named more than once",
                "type": "duplicate_key",
            }
            for loc in locs
        ],
    )
