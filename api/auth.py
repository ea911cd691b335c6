"""API keys: ``Authorization: Key=<key>``, checked against SHA-256 hashes in constant time.

A route that needs a key takes an ``Owner`` parameter (the key's configured name): FastAPI runs
the check before the route's body, and the same declaration states the ``ApiKey`` security scheme
in the OpenAPI document, so no route calls ``authenticate`` itself and none can forget to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from api.problems import unauthorized
from api.services import services_of

API_KEY_SCHEME = "ApiKey"

_HEADER = re.compile(r"^Key=(?P<key>[\x21-\x7e]{16,256})$")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key: 256 bits behind a ``la_`` prefix.

    The prefix makes a leaked key recognisable to secret scanners, and keeps a key from starting
    with ``-``, which command-line parsers (``submit --key …``) would read as an option.
    """
    return "la_" + secrets.token_urlsafe(32)


def authenticate(header: str | None, hashes: dict[str, str]) -> str:
    """The name of the key in ``header``, or a 401 problem. Never logs or echoes the key."""
    match = _HEADER.match(header or "")
    if match is None:
        raise unauthorized()
    digest = hash_key(match["key"])
    name = None
    # Compare with every configured hash, without stopping at a match, so timing tells nothing.
    for known, known_name in hashes.items():
        if hmac.compare_digest(digest, known):
            name = known_name
    if name is None:
        raise unauthorized()
    return name


class ApiKeyHeader(APIKeyHeader):
    """The ``ApiKey`` scheme as a dependency: the name of the request's key, or a 401 problem."""

    def __init__(self) -> None:
        super().__init__(
            name="Authorization",
            scheme_name=API_KEY_SCHEME,
            description="`Key=<API key>` (the key itself, as `leadarchive keys new` printed it)",
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> str:
        hashes = services_of(request).settings.key_hashes()
        return authenticate(request.headers.get("authorization"), hashes)


Owner = Annotated[str, Depends(ApiKeyHeader())]
"""A route parameter: the name of the API key that sent the request (401 without a known key)."""
