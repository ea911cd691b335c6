"""What `pip install .` (the Dockerfile's install) brings is what the product imports.

`leadarchive submit` once imported httpx2, which only the test extra installed: installed the way
the Dockerfile installs it, the command failed with ModuleNotFoundError. These tests read the
product's own imports and pyproject.toml, so the next such import fails here instead.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# What the wheel ships (the Dockerfile copies exactly these).
PACKAGES = ("api", "tasks", "worker", "leadarchive")


def _project() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def _requirements() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, _project()["dependencies"])}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module imported -> the product files importing it (stdlib and own left out)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_module_the_product_imports_is_a_direct_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _requirements()
    imports = _third_party_imports()
    assert "httpx2" in imports and "sqlalchemy" in imports  # the scan sees the product
    missing = {
        module: sorted(files)
        for module, files in imports.items()
        if not any(canonicalize_name(d) in declared for d in distributions.get(module, [module]))
    }
    assert missing == {}, f"imported by the product, not in [project].dependencies: {missing}"


def test_every_dependency_has_an_upper_bound() -> None:
    unbounded = [
        str(r)
        for r in _requirements().values()
        if not any(spec.operator in ("<", "<=", "==", "~=") for spec in r.specifier)
    ]
    assert unbounded == []


def test_celery_and_kombu_are_held_to_the_tested_minor_release() -> None:
    """worker/broker.py works around kombu 5.7's Redis transport, and the API builds kombu's
    message by hand: both are tested on the installed minor release, and no other is allowed."""
    requirements = _requirements()
    for name in ("celery", "kombu"):
        installed = importlib.metadata.version(name)
        major, minor = (int(part) for part in installed.split(".")[:2])
        specifier = requirements[name].specifier
        assert specifier.contains(installed), f"{name} {installed} is outside {specifier}"
        assert not specifier.contains(f"{major}.{minor + 1}.0"), f"{name}: {specifier}"
        assert not specifier.contains(f"{major}.{minor - 1}.99"), f"{name}: {specifier}"
