"""docker-compose.yml read as Compose reads it: YAML with merge keys, then ``${...}``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
_REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}"
)


class MissingVariableError(KeyError):
    """A ``${NAME:?message}`` whose variable is not set: Compose refuses to start."""


def load() -> dict[str, Any]:
    """The compose file as YAML (anchors and ``<<`` merges resolved, nothing interpolated)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def references(value: str) -> list[tuple[str, str | None, str]]:
    """Every ``${...}`` in ``value`` as (name, operator, argument)."""
    return [(m["name"], m["op"], m["arg"] or "") for m in _REFERENCE.finditer(value) if m["name"]]


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """``value`` with every reference replaced the way Compose does it."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise MissingVariableError(f"{name}: {arg}")
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        return current or ""

    return _REFERENCE.sub(replace, value)


def without_references(value: str) -> str:
    """``value`` with every ``${...}`` removed: what is written in the file literally."""
    return _REFERENCE.sub("", value)
