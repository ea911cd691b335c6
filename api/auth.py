"""API keys: ``Authorization: Key=<key>``, checked against SHA-256 hashes in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from api.problems import unauthorized

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
