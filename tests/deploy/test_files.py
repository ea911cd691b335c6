"""deploy/: systemd units, the environment example, the proxies, Redis, and the Dockerfile."""

from __future__ import annotations

import configparser
import os
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import APIRouter

from api.routes import archive, dearchive, operations, selection
from leadarchive.cli import build_parser
from tasks.settings import EXAMPLE_SECRET, Settings
from tests.deploy.compose import ROOT

DEPLOY = ROOT / "deploy"
VENV_SCRIPT = "/opt/leadarchive/.venv/bin/leadarchive"
ENV_FILE = "/etc/leadarchive/leadarchive.env"
ENV_EXAMPLE = DEPLOY / "leadarchive.env.example"
ASSIGNMENT = re.compile(r"^#?(?P<name>LEADARCHIVE_[A-Z0-9_]+)=(?P<value>.*)$")


def read_unit(path: Path) -> configparser.ConfigParser:
    # systemd allows repeated keys (ExecStart= resets), hence strict=False.
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text(encoding="utf-8"))
    return unit


@pytest.mark.parametrize("command", ["api", "worker", "flower"])
def test_systemd_unit_runs_its_command_as_the_service_user(command: str) -> None:
    unit = read_unit(DEPLOY / f"leadarchive-{command}.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[:2] == [VENV_SCRIPT, command]
    # The arguments exist on the real console script.
    args = build_parser().parse_args(argv[1:])
    assert args.command == command
    if command in ("api", "flower"):
        assert args.host == "127.0.0.1", "behind the proxy or an SSH tunnel only"
    assert service["User"] == "leadarchive"
    assert service["EnvironmentFile"] == ENV_FILE
    # A worker that exits for any reason, even with status 0, must come back (issue 13).
    assert service["Restart"] == "always"
    for option, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[option] == value, option
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_worker_unit_stops_gracefully() -> None:
    service = read_unit(DEPLOY / "leadarchive-worker.service")["Service"]
    # Celery's warm shutdown: SIGTERM to the main process, which stops its pool itself.
    assert service["KillMode"] == "mixed"


def example_assignments() -> dict[str, str]:
    found = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            found[match["name"]] = match["value"]
    return found


def test_env_example_documents_every_setting() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assignments = example_assignments()
    for name in Settings.model_fields:
        variable = f"LEADARCHIVE_{name.upper()}"
        assert variable in text, variable
        assert variable in assignments, f"{variable} has no example line"
    unknown = set(assignments) - {f"LEADARCHIVE_{n.upper()}" for n in Settings.model_fields}
    assert not unknown, f"not a setting: {unknown}"


def test_env_example_values_are_all_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("LEADARCHIVE_")]:
        monkeypatch.delenv(variable)
    # Every commented example uncommented: each must be a value the service accepts.
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    active = [line.removeprefix("#") for line in lines if ASSIGNMENT.match(line)]
    env_file = tmp_path / "leadarchive.env"
    env_file.write_text("\n".join(active) + "\n", encoding="utf-8")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.database_url.startswith("mysql+pymysql://")
    assert settings.key_hashes()
    assert ":" in settings.flower_basic_auth
    # The example schedule is one the service reads, in the example's zone.
    assert settings.schedule().spans
    assert settings.timezone == "America/New_York"


def test_env_example_holds_no_secret() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for digest in re.findall(r"[0-9a-f]{64}", text):
        assert digest == "0" * 64, "only the all-zero placeholder, which no key hashes to"
    values = example_assignments()
    for url in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"):
        assert urlsplit(values[f"LEADARCHIVE_{url}"]).password == EXAMPLE_SECRET, url
    assert values["LEADARCHIVE_FLOWER_BASIC_AUTH"].endswith(f":{EXAMPLE_SECRET}")


def _route_paths(routers: tuple[APIRouter, ...]) -> list[str]:
    """Every path these routers serve, with a job ID in place of ``{job_id}``."""
    paths = {route.path for router in routers for route in router.routes}  # type: ignore[attr-defined]
    return sorted(path.replace("{job_id}", "A" * 22) for path in paths)


# What the proxies must pass on: every route of the job API. The operations routes (/healthz,
# /readyz, /metrics, /docs) stay on the loopback.
PUBLIC = _route_paths((archive.router, selection.router, dearchive.router))
PRIVATE = [
    *_route_paths((operations.router,)),
    "/docs",
    "/openapi.json",
    "/vicidial/admin.php",
    "/vicidial/leads/archived.php",  # a path that only starts like the API's
]


def test_proxies_forward_every_job_route_and_nothing_else_to_the_api_port() -> None:
    api_port = shlex.split(read_unit(DEPLOY / "leadarchive-api.service")["Service"]["ExecStart"])
    port = api_port[api_port.index("--port") + 1]
    assert {"/vicidial/leads/dearchive", "/vicidial/leads/archive/selection"} <= set(PUBLIC)

    apache = (DEPLOY / "apache-leadarchive.conf").read_text(encoding="utf-8")
    assert "<VirtualHost *:443>" in apache
    assert re.search(r"^\s*SSLEngine on$", apache, re.M)
    forwards = dict(re.findall(r"^\s*ProxyPass\s+(\S+)\s+(\S+)$", apache, re.M))
    reverses = dict(re.findall(r"^\s*ProxyPassReverse\s+(\S+)\s+(\S+)$", apache, re.M))
    assert forwards == reverses
    for prefix, upstream in forwards.items():
        assert upstream == f"http://127.0.0.1:{port}{prefix}"  # the same path, on the API's port

    def apache_passes(path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in forwards)

    (headers_for,) = re.findall(r'^\s*<LocationMatch "([^"]+)">$', apache, re.M)
    assert re.search(r'^\s*RequestHeader set X-Forwarded-Proto "?https"?$', apache, re.M)

    nginx = (DEPLOY / "nginx-leadarchive.conf").read_text(encoding="utf-8")
    assert re.search(r"^\s*listen 443 ssl;", nginx, re.M)
    assert re.search(rf"^\s*server 127\.0\.0\.1:{port};", nginx, re.M)
    (location,) = re.findall(r"^\s*location ~ (\S+) \{$", nginx, re.M)  # a regular expression
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert re.search(rf"^\s*proxy_set_header {header} ", nginx, re.M), header

    for path in PUBLIC:
        assert apache_passes(path) and re.match(headers_for, path), path
        assert re.match(location, path), path
    for path in PRIVATE:
        assert not apache_passes(path) and not re.match(location, path), path
        assert not re.match(headers_for, path), path


def test_proxy_body_caps_are_small_but_above_the_apis_own() -> None:
    limit = Settings.model_fields["max_body_bytes"].default
    apache = (DEPLOY / "apache-leadarchive.conf").read_text(encoding="utf-8")
    (apache_cap,) = re.findall(r"^\s*LimitRequestBody (\d+)$", apache, re.M)
    nginx = (DEPLOY / "nginx-leadarchive.conf").read_text(encoding="utf-8")
    (nginx_cap,) = re.findall(r"^\s*client_max_body_size (\d+)k;$", nginx, re.M)
    for cap in (int(apache_cap), int(nginx_cap) * 1024):
        # Above: the API's problem+json 413 answers first. Small: a backstop, not a door.
        assert limit < cap <= 1024 * 1024


def test_redis_config_never_evicts_and_stays_local() -> None:
    lines = (DEPLOY / "redis-leadarchive.conf").read_text(encoding="utf-8").splitlines()
    directives = dict(
        line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["bind"].split()[0] == "127.0.0.1"
    assert directives["protected-mode"] == "yes"
    assert directives["appendonly"] == "yes"
    # A password, the one the env example's URLs carry (both placeholders, changed together).
    broker = urlsplit(example_assignments()["LEADARCHIVE_BROKER_URL"])
    assert directives["requirepass"] == broker.password == EXAMPLE_SECRET
    bind = directives["bind"].split()[0]
    assert (broker.hostname, broker.port) == (bind, int(directives["port"]))


def test_dockerfile_builds_one_unprivileged_image_from_the_source_tree() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"pip install \.", dockerfile)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users == ["leadarchive"]
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M))
    assert {"api", "tasks", "worker", "leadarchive"} <= copied
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored
    assert ".git" in ignored
