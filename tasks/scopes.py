"""Scoped API keys: what a key may do, to which lists, how many leads at once.

A key's scope is written beside its hash in its ``LEADARCHIVE_API_KEYS`` entry, without commas
(the entries' separator): ``name:sha256hex:actions=archive+delete&lists=1001-1004+2001&max=100``.
Each of ``actions``, ``lists`` and ``max`` is optional and given at most once; an entry without a
scope (``name:sha256hex``) is unscoped and keeps every right it had before scopes existed.

- ``actions``: ``archive`` (insert and update), ``delete``, ``restore``, ``selection``;
- ``lists``: ``vicidial_list.list_id`` values and inclusive ranges (``1001-1004``), kept as ranges;
  a lead of another list is reported ``forbidden`` for every requested action and not touched;
- ``max``: the key's own limit of lead IDs per request, at most ``LEADARCHIVE_MAX_LEAD_IDS``.

Plain values, no I/O: the settings parse entries with ``parse_scope``, the API checks actions and
the limit, the job record carries the ``Lists`` a job was submitted with (its text, ``str()``),
and the batch asks ``Lists.allows`` for each lead. Errors never repeat the text they refuse (a
raw key may have been pasted where a scope belongs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The actions a scope names, in the order they are shown.
ACTIONS: tuple[str, ...] = ("archive", "delete", "restore", "selection")
# The scope's action each of an archive request's actions needs.
ARCHIVE_REQUEST_ACTIONS = {"insert": "archive", "update": "archive", "delete": "delete"}
# vicidial_list.list_id is BIGINT UNSIGNED.
MAX_LIST_ID = 2**64 - 1

_NUMBER = re.compile(r"[0-9]{1,20}")
_RANGE = re.compile(r"(?P<low>[0-9]{1,20})(?:-(?P<high>[0-9]{1,20}))?")
_PART = re.compile(r"(?P<name>[a-z]+)=(?P<value>.*)", re.DOTALL)


class ScopeError(ValueError):
    """A scope that cannot be read; the message never repeats what was refused."""


@dataclass(frozen=True, slots=True)
class Lists:
    """Allowed ``list_id`` values as sorted, disjoint, inclusive ranges."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, ranges: Iterable[tuple[int, int]]) -> Lists:
        """The ranges sorted, overlapping and adjacent ones merged."""
        merged: list[tuple[int, int]] = []
        for low, high in sorted(ranges):
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        if not merged:
            raise ScopeError("lists needs at least one list ID")
        return cls(tuple(merged))

    @classmethod
    def parse(cls, text: str, separator: str = "+") -> Lists:
        """``1001-1004+2001`` (or with another separator, ``1001-1004,2001``)."""
        ranges = []
        for item in text.split(separator):
            match = _RANGE.fullmatch(item.strip())
            if match is None:
                raise ScopeError(
                    "lists must be list IDs or inclusive ranges of them (1001-1004),"
                    f" separated by {separator!r}"
                )
            low = int(match["low"])
            high = int(match["high"]) if match["high"] is not None else low
            if high > MAX_LIST_ID:
                raise ScopeError(f"a list ID is at most {MAX_LIST_ID} (BIGINT UNSIGNED)")
            if low > high:
                raise ScopeError("a range of lists must go from the lower ID to the higher")
            ranges.append((low, high))
        return cls.of(ranges)

    def allows(self, list_id: object) -> bool:
        """True when ``list_id`` (an integer, as the database returns it) is one of the lists."""
        if type(list_id) is not int:
            return False  # NULL, or anything unexpected: not one of them
        return any(low <= list_id <= high for low, high in self.ranges)

    def __str__(self) -> str:
        return "+".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges)


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What one API key may do; ``None`` in a field means no restriction of that kind."""

    actions: frozenset[str] | None = None
    lists: Lists | None = None
    max_lead_ids: int | None = None

    @property
    def unscoped(self) -> bool:
        """True for a key with every right (an entry without a scope)."""
        return self.actions is None and self.lists is None and self.max_lead_ids is None

    def allows(self, action: str) -> bool:
        """True when the key may use ``action`` (one of ``ACTIONS``)."""
        return self.actions is None or action in self.actions

    def lead_limit(self, global_limit: int) -> int:
        """The most lead IDs one request of this key may send."""
        if self.max_lead_ids is None:
            return global_limit
        return min(self.max_lead_ids, global_limit)

    def __str__(self) -> str:
        """The scope as written in a key entry (``""`` when unscoped)."""
        parts = []
        if self.actions is not None:
            parts.append("actions=" + "+".join(a for a in ACTIONS if a in self.actions))
        if self.lists is not None:
            parts.append(f"lists={self.lists}")
        if self.max_lead_ids is not None:
            parts.append(f"max={self.max_lead_ids}")
        return "&".join(parts)


UNSCOPED = KeyScope()


def parse_actions(text: str, separator: str = "+") -> frozenset[str]:
    """``archive+delete`` (or with another separator) as a set of ``ACTIONS``."""
    actions = [a.strip() for a in text.split(separator)]
    if not all(a in ACTIONS for a in actions):
        raise ScopeError(
            f"actions must be some of {', '.join(ACTIONS)}, separated by {separator!r}"
        )
    return frozenset(actions)


def parse_max(text: str) -> int:
    """A key's lead limit: a whole number from 1."""
    if not _NUMBER.fullmatch(text) or int(text) < 1:
        raise ScopeError("max must be a whole number of lead IDs, at least 1")
    return int(text)


def parse_scope(text: str) -> KeyScope:
    """A key entry's scope: ``actions=...&lists=...&max=...``, each optional, at most once."""
    if not text:
        raise ScopeError(
            "the scope after the hash is empty: write actions=..., lists=... or max=...,"
            " joined by '&', or leave out the second ':'"
        )
    if any(c.isspace() for c in text):
        raise ScopeError("a scope has no spaces (join values with '+' and parts with '&')")
    values: dict[str, str] = {}
    for part in text.split("&"):
        match = _PART.fullmatch(part)
        if match is None or match["name"] not in ("actions", "lists", "max"):
            raise ScopeError(
                "a scope is actions=..., lists=... and max=... joined by '&'"
                " (e.g. actions=archive+delete&lists=1001-1004+2001&max=100)"
            )
        if match["name"] in values:
            raise ScopeError(f"{match['name']} is given twice")
        if not match["value"]:
            raise ScopeError(f"{match['name']} is empty")
        values[match["name"]] = match["value"]
    return KeyScope(
        actions=parse_actions(values["actions"]) if "actions" in values else None,
        lists=Lists.parse(values["lists"]) if "lists" in values else None,
        max_lead_ids=parse_max(values["max"]) if "max" in values else None,
    )


def key_entry(name: str, digest: str, scope: KeyScope = UNSCOPED) -> str:
    """The ``LEADARCHIVE_API_KEYS`` entry of a key: ``name:sha256hex[:scope]``."""
    text = str(scope)
    return f"{name}:{digest}:{text}" if text else f"{name}:{digest}"
