"""API keys: ``Authorization: Key=<key>``, checked against SHA-256 hashes in constant time.

A route that needs a key takes an ``Owner`` parameter (the key's configured name): FastAPI runs
the check before the route's body, and the same declaration states the ``ApiKey`` security scheme
in the OpenAPI document, so no route calls ``authenticate`` itself and none can forget to.

The owner is a ``KeyName``: the name as a plain ``str`` (jobs, rate limits and logs use it as
before) that also carries the key's scope (``tasks.scopes``). A route calls
``require_action(owner, ...)`` with the actions a request asks for before it writes or enqueues
anything: a scoped key without one of them is refused with 403, naming the action. An unscoped
key passes every check, as before scopes existed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Annotated, TypeVar

from fastapi import Depends
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from api.problems import Problem, unauthorized
from api.services import services_of
from tasks.scopes import ACTIONS, UNSCOPED, KeyScope

API_KEY_SCHEME = "ApiKey"

_HEADER = re.compile(r"^Key=(?P<key>[\x21-\x7e]{16,256})$")

T = TypeVar("T")


class KeyName(str):
    """The name of the request's key (a ``str``, as routes have always used it) and its scope."""

    scope: KeyScope

    def __new__(cls, name: str, scope: KeyScope = UNSCOPED) -> KeyName:
        named = super().__new__(cls, name)
        named.scope = scope
        return named


def scope_of(owner: str) -> KeyScope:
    """The scope of ``owner``: a ``KeyName``'s own, or none for a plain name."""
    return owner.scope if isinstance(owner, KeyName) else UNSCOPED


def require_action(owner: str, *actions: str) -> None:
    """Refuse with 403 the first of ``actions`` (``tasks.scopes.ACTIONS``) the key may not use.

    Call it before anything is written or enqueued: the refusal leaves no trace but the answer.
    """
    scope = scope_of(owner)
    for action in actions:
        if action not in ACTIONS:
            raise ValueError(f"not an action a key can be scoped to: {action!r}")
        if not scope.allows(action):
            allowed = sorted(scope.actions or (), key=ACTIONS.index)
            raise Problem(
                403,
                "action-not-allowed",
                "Forbidden",
                f"this API key may not use the action {action!r}; it may use:"
                f" {', '.join(allowed) or 'none'}",
                action=action,
                allowed_actions=allowed,
            )


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key: 256 bits behind a ``la_`` prefix.

    The prefix makes a leaked key recognisable to secret scanners, and keeps a key from starting
    with ``-``, which command-line parsers (``submit --key …``) would read as an option.
    """
    return "la_" + secrets.token_urlsafe(32)


def authenticate(header: str | None, hashes: Mapping[str, T]) -> T:
    """What ``hashes`` holds for the key in ``header`` (its name, or its name and scope), or a
    401 problem. Never logs or echoes the key."""
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
        raise unauthorized(unknown_key=True)
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

    async def __call__(self, request: HTTPConnection) -> KeyName:
        keys = services_of(request).settings.api_key_scopes()
        key = authenticate(request.headers.get("authorization"), keys)
        return KeyName(key.name, key.scope)


Owner = Annotated[KeyName, Depends(ApiKeyHeader())]
"""A route parameter: the name of the API key that sent the request (401 without a known key),
a ``KeyName`` carrying the key's scope (``scope_of``, ``require_action``)."""
