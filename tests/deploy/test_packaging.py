"""What `pip install .` (the Dockerfile's install) brings is what the product imports.

`leadarchive submit` once imported httpx2, which only the test extra installed: installed the way
the Dockerfile installs it, the command failed with ModuleNotFoundError. These tests read the
product's own imports and pyproject.toml, so the next such import fails here instead; and they
build the wheel, install it without extras into a fresh virtualenv, and run the installed
``leadarchive`` (help, the API, a worker, and ``submit`` against them).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from sqlalchemy import Connection

from api.auth import hash_key, new_key
from tasks.seed import insert_leads, lead_rows
from testkit.http import RawHTTP
from testkit.polling import wait_until
from testkit.processes import free_port, service_env, start, stop_group
from tests.conftest import claim_redis_database
from tests.helpers import archive, live

ROOT = Path(__file__).resolve().parents[2]
# What the wheel ships (the Dockerfile copies exactly these).
PACKAGES = ("api", "tasks", "worker", "leadarchive")


def _project() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def _requirements() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, _project()["dependencies"])}


def _every_requirement() -> list[Requirement]:
    """Runtime, every extra's (but the project's own), and the build's."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        document = tomllib.load(f)
    lines = [
        *document["project"]["dependencies"],
        *(
            line
            for extra in document["project"]["optional-dependencies"].values()
            for line in extra
        ),
        *document["build-system"]["requires"],
    ]
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "leadarchive"]


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


# Held tighter than the policy, to one minor release (see the next test).
MINOR_CAPPED = {"celery", "kombu"}


def test_every_dependency_follows_the_one_capping_policy() -> None:
    """pyproject.toml's policy: ``>=`` a lower bound, ``<`` the next major release after it (1.0
    for 0.x), nothing else; celery and kombu below their next minor release."""
    broken = []
    for requirement in _every_requirement():
        specs = {spec.operator: Version(spec.version) for spec in requirement.specifier}
        if set(specs) != {">=", "<"} or len(requirement.specifier) != 2:
            broken.append(str(requirement))
            continue
        lower, cap = specs[">="], specs["<"]
        if canonicalize_name(requirement.name) in MINOR_CAPPED:
            expected = Version(f"{lower.major}.{lower.minor + 1}")
        else:
            expected = Version(f"{lower.major + 1}")
        if cap != expected:
            broken.append(f"{requirement} (the cap should be <{expected})")
    assert broken == []


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


# --- the wheel, installed as the Dockerfile installs it ------------------------------------------

# Only the test extra brings these (pyyaml is not one: uvicorn[standard] needs it).
TEST_ONLY = ("pytest", "hypothesis", "selenium", "schemathesis", "psutil")


def _run(argv: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Run from outside the source tree, so that only the installed package can be imported.
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a fresh virtualenv holding the wheel built from this tree, without extras."""
    where = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", where / "dist", ROOT], cwd=where
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (where / "dist").glob("leadarchive-*.whl")
    made = _run([sys.executable, "-m", "venv", where / "venv"], cwd=where)
    assert made.returncode == 0, made.stderr
    pip = where / "venv" / "bin" / "pip"
    done = _run([pip, "install", "--disable-pip-version-check", wheel], cwd=where)
    assert done.returncode == 0, done.stderr
    return where / "venv" / "bin"


@pytest.mark.slow
def test_the_wheel_installs_without_extras_and_leadarchive_help_runs(installed: Path) -> None:
    found = _run(
        [
            installed / "python",
            "-c",
            "import importlib.util, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))",
            *TEST_ONLY,
        ],
        cwd=installed,
    )
    helped = _run([installed / "leadarchive", "--help"], cwd=installed)
    submit_help = _run([installed / "leadarchive", "submit", "--help"], cwd=installed)

    assert json.loads(found.stdout) == [], found.stderr
    assert helped.returncode == 0, helped.stderr
    assert "submit" in helped.stdout
    assert submit_help.returncode == 0, submit_help.stderr


@pytest.fixture
def installed_service(
    installed: Path, database_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """The installed ``leadarchive api`` and ``leadarchive worker`` on this test's database and a
    Redis database of their own: (base URL, API key)."""
    key = new_key()
    port = free_port()
    with claim_redis_database() as redis_url:
        env = service_env(database_url, redis_url, api_keys=f"installed:{hash_key(key)}")
        processes = []
        try:
            api = start(
                [str(installed / "leadarchive"), "api", "--port", str(port)],
                env,
                tmp_path / "api.log",
            )
            processes.append(api)
            worker = [str(installed / "leadarchive"), "worker", "--concurrency", "1"]
            worker += ["--metrics-port", str(free_port())]
            processes.append(start(worker, env, tmp_path / "worker.log"))
            probe = RawHTTP("127.0.0.1", port, {})
            try:
                wait_until(
                    lambda: probe.request("GET", "/healthz").status == 200,
                    60,
                    "installed API",
                    process=api,
                    log=tmp_path / "api.log",
                    ignore=(OSError,),
                )
            finally:
                probe.close()
            yield f"http://127.0.0.1:{port}", key
        finally:
            for process in reversed(processes):
                stop_group(process)


@pytest.mark.slow
def test_the_installed_submit_archives_through_the_installed_api(
    installed: Path, installed_service: tuple[str, str], vicidial: Connection
) -> None:
    url, key = installed_service
    insert_leads(vicidial, lead_rows(5, seed=71))
    before = live(vicidial)

    submitted = _run(
        [installed / "leadarchive", "submit", "--url", url, "--key", key, "--delete", "--json"]
        + [str(i) for i in (1, 2, 3, 4, 5)],
        cwd=installed,
    )

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert json.loads(submitted.stdout)["counts"]["delete"]["deleted"] == 5
    assert (live(vicidial), archive(vicidial)) == ({}, before)
