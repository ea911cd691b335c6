"""docker-compose.yml: the services, their shared image, start order, Redis policy and secrets."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import make_url

from leadarchive.cli import build_parser
from tasks.archive import Tuning
from tasks.settings import Settings
from testkit.processes import free_port
from tests.deploy.compose import (
    COMPOSE_FILE,
    ROOT,
    MissingVariableError,
    interpolate,
    load,
    references,
    without_references,
)
from tests.helpers import wait_for

APP_SERVICES = ("api", "worker", "flower")
REQUIRED_SECRETS = {
    "MARIADB_ROOT_PASSWORD",
    "LEADARCHIVE_DB_PASSWORD",
    "LEADARCHIVE_API_KEYS",
    "LEADARCHIVE_FLOWER_BASIC_AUTH",
    "LEADARCHIVE_REDIS_PASSWORD",
}
# What a user puts in .env: the five secrets and the office hours, nothing else.
DOTENV = {
    "MARIADB_ROOT_PASSWORD": "root-pw",
    "LEADARCHIVE_DB_PASSWORD": "db-pw",
    "LEADARCHIVE_API_KEYS": "demo:" + "a" * 64,
    "LEADARCHIVE_FLOWER_BASIC_AUTH": "admin:flower-pw",
    "LEADARCHIVE_REDIS_PASSWORD": "redis-pw",
    "LEADARCHIVE_OFFICE_HOURS": "none",
}
# Settings the stack itself decides (where MariaDB and Redis are) or that must come from .env.
STACK_SETTINGS = {
    "database_url",
    "broker_url",
    "result_backend",
    "api_keys",
    "flower_basic_auth",
    "office_hours",
}
SENSITIVE = re.compile(r"PASSWORD|SECRET|TOKEN|_KEYS?$|_AUTH$|_URL$|RESULT_BACKEND$")
# Settings that are URLs: only their password is secret.
URL_SETTINGS = ("LEADARCHIVE_DATABASE_URL", "LEADARCHIVE_BROKER_URL", "LEADARCHIVE_RESULT_BACKEND")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def test_every_service_is_defined(compose: dict[str, Any]) -> None:
    assert {"mariadb", "redis", "api", "worker", "flower"} <= set(services(compose))
    assert services(compose)["mariadb"]["image"] == "mariadb:10.11"
    assert str(services(compose)["redis"]["image"]).startswith("redis:7")


def test_api_worker_and_flower_share_one_image_definition(compose: dict[str, Any]) -> None:
    shared = compose["x-app"]
    assert shared["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert (ROOT / shared["build"]["dockerfile"]).is_file()
    for name in (*APP_SERVICES, "seed"):
        service = services(compose)[name]
        assert service["build"] == shared["build"], name
        assert service["image"] == shared["image"], name
        assert service["environment"] == shared["environment"], name
    # Merged from the anchor, not copied: one definition to change.
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert text.count("<<: *app") == len(APP_SERVICES) + 1
    assert text.count("build:") == 1


@pytest.mark.parametrize(
    ("service", "probe"),
    [
        ("mariadb", r"healthcheck\.sh --connect --innodb_initialized|mariadb-admin ping"),
        ("redis", r"redis-cli ping"),
        ("api", r"http://127\.0\.0\.1:8000/healthz"),
        ("worker", r"inspect ping"),
    ],
)
def test_healthchecks_probe_each_service(compose: dict[str, Any], service: str, probe: str) -> None:
    test = services(compose)[service]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert re.search(probe, " ".join(test[1:]))


def test_start_order_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        depends = services(compose)[name]["depends_on"]
        assert set(depends) == {"mariadb", "redis"}, name
    assert set(services(compose)["flower"]["depends_on"]) == {"redis"}
    assert set(services(compose)["seed"]["depends_on"]) == {"mariadb"}
    for name, service in services(compose).items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services(compose)[dependency], dependency


def redis_script(compose: dict[str, Any]) -> str:
    """The shell script the redis service runs (Compose's ``$$`` is a literal ``$``)."""
    argv = command(services(compose)["redis"])
    assert argv[:2] == ["sh", "-c"]
    return interpolate(argv[2], {})


def test_redis_never_evicts_and_persists(compose: dict[str, Any]) -> None:
    argv = shlex.split(redis_script(compose))
    assert argv[:2] == ["exec", "redis-server"]
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services(compose)["redis"]["volumes"])


def test_redis_asks_for_the_password_the_services_send(compose: dict[str, Any]) -> None:
    redis_env = services(compose)["redis"]["environment"]
    password = interpolate(redis_env["REDISCLI_AUTH"], DOTENV)
    assert password == DOTENV["LEADARCHIVE_REDIS_PASSWORD"]
    app_env = compose["x-app"]["environment"]
    for name in ("LEADARCHIVE_BROKER_URL", "LEADARCHIVE_RESULT_BACKEND"):
        url = urlsplit(interpolate(app_env[name], DOTENV))
        assert (url.hostname, url.port, url.password) == ("redis", 6379, password), name
    # Flower too: it reads the same x-app environment.
    assert services(compose)["flower"]["environment"] == app_env


def test_the_redis_script_starts_a_redis_that_wants_the_password(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The service's own script, run here on a free port: the password reaches redis-server
    intact through the shell, and the health check's redis-cli sends it from REDISCLI_AUTH."""
    # Spaces, a $ and quotes: what a shell would mangle if the script quoted it wrongly.
    phrase = "pw with $pecial 'quote\" chars"
    port = free_port()
    script = redis_script(compose) + f" --port {port} --dir {tmp_path} --save ''"
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": phrase}
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)

    def answers(**auth: str) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_connect_timeout=1, **auth).ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        wait_for(lambda: answers(password=phrase), timeout=20)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()
        healthcheck = services(compose)["redis"]["healthcheck"]["test"][1:]
        answer = subprocess.run(
            [healthcheck[0], "-p", str(port), *healthcheck[1:]],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert answer.stdout.strip() == "PONG"
        # redis-server rewrote its process title: ps shows no password.
        assert phrase not in Path(f"/proc/{server.pid}/cmdline").read_text(errors="replace")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_each_app_service_runs_its_leadarchive_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, subcommand in (*((s, s) for s in APP_SERVICES), ("seed", "seed-demo")):
        argv = command(services(compose)[name])
        assert argv[0] == "leadarchive", name
        # The real console script's parser accepts the arguments.
        args = parser.parse_args(argv[1:])
        assert args.command == subcommand, name
    api = parser.parse_args(command(services(compose)["api"])[1:])
    assert (api.host, api.port) == ("0.0.0.0", 8000)  # noqa: S104 - inside the container
    flower = parser.parse_args(command(services(compose)["flower"])[1:])
    assert flower.host == "0.0.0.0"  # noqa: S104 - inside the container


def test_published_ports_bind_the_loopback_by_default(compose: dict[str, Any]) -> None:
    for name in ("api", "flower"):
        for mapping in services(compose)[name]["ports"]:
            host_ip = interpolate(mapping, DOTENV).split(":")[0]
            assert host_ip == "127.0.0.1", name
    for name in ("mariadb", "redis", "worker"):
        assert "ports" not in services(compose)[name], name


def test_mariadb_is_initialised_like_a_vicidial_server(compose: dict[str, Any]) -> None:
    mariadb = services(compose)["mariadb"]
    assert mariadb["environment"]["MARIADB_DATABASE"] == "asterisk"
    assert "--character-set-server=utf8" in mariadb["command"]
    assert "--collation-server=utf8_unicode_ci" in mariadb["command"]
    mounts = {
        target.split(":")[0]: source
        for source, target in (v.split(":", 1) for v in mariadb["volumes"])
    }
    init = ROOT / mounts["/docker-entrypoint-initdb.d"]
    assert (init / "01-vicidial.sql").is_file()
    assert (init / "02-leadarchive-user.sh").is_file()
    # Sourced by the entrypoint (so it can use docker_process_sql) only if not executable.
    assert not (init / "02-leadarchive-user.sh").stat().st_mode & 0o111
    assert (ROOT / mounts["/leadarchive/grants.sql"]).resolve() == ROOT / "deploy" / "grants.sql"
    # The app connects to the database the init files made, as the user the init script made.
    url = make_url(interpolate(compose["x-app"]["environment"]["LEADARCHIVE_DATABASE_URL"], DOTENV))
    assert (url.host, url.database, url.username) == ("mariadb", "asterisk", "leadarchive")
    assert url.password == DOTENV["LEADARCHIVE_DB_PASSWORD"]
    assert url.query["charset"] == "utf8mb4"


def all_environment_values(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    found = []
    for section, body in (("x-app", compose["x-app"]), *services(compose).items()):
        for key, value in (body.get("environment") or {}).items():
            found.append((section, key, str(value)))
    return found


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for section, key, value in all_environment_values(compose):
        if not SENSITIVE.search(key):
            continue
        refs = references(value)
        assert refs, (section, key)
        if key in URL_SETTINGS:
            # Only the password is secret: it must be a reference, never text.
            markers = {name: f"from-dotenv-{name.lower()}" for name in DOTENV}
            assert urlsplit(interpolate(value, markers)).password in markers.values(), key
        else:
            assert without_references(value) == "", (section, key)
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not re.search(r"\b[0-9a-f]{64}\b", text), "a key hash belongs in .env"
    assert "env_file" not in text, "secrets are passed by name, not whole .env files"


def test_required_secrets_stop_compose_when_missing(compose: dict[str, Any]) -> None:
    required = {
        name
        for _, _, value in all_environment_values(compose)
        for name, op, _ in references(value)
        if op == ":?"
    }
    assert required == REQUIRED_SECRETS
    for name in REQUIRED_SECRETS:
        env = {k: v for k, v in DOTENV.items() if k != name}
        with pytest.raises(MissingVariableError, match=name):
            for _, _, value in all_environment_values(compose):
                interpolate(value, env)


def test_every_setting_is_passed_with_the_services_own_default(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("LEADARCHIVE_")]:
        monkeypatch.delenv(variable)
    environment = compose["x-app"]["environment"]
    names = {f"LEADARCHIVE_{field.upper()}" for field in Settings.model_fields}
    assert set(environment) == names
    values = {
        key.removeprefix("LEADARCHIVE_").lower(): interpolate(str(value), DOTENV)
        for key, value in environment.items()
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    # The service's defaults, resolved as it resolves them (the time zone: the local zone).
    defaults = Settings(_env_file=None, **{k: values[k] for k in STACK_SETTINGS})  # type: ignore[call-arg]
    for name in Settings.model_fields:
        if name not in STACK_SETTINGS:
            assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.broker_url.startswith("redis://:redis-pw@redis:6379/")
    assert settings.result_backend.startswith("redis://:redis-pw@redis:6379/")
    # The stack's default chunk time is the engine's own.
    assert settings.chunk_time == Tuning().chunk_time


def test_office_hours_must_be_decided_in_dotenv(compose: dict[str, Any]) -> None:
    value = compose["x-app"]["environment"]["LEADARCHIVE_OFFICE_HOURS"]
    undecided = {k: v for k, v in DOTENV.items() if k != "LEADARCHIVE_OFFICE_HOURS"}
    with pytest.raises(MissingVariableError, match=r"LEADARCHIVE_OFFICE_HOURS.*or none"):
        interpolate(value, undecided)
    # An explicit empty value is a decision (no restriction), as for the service itself.
    for decided in ("none", "", "mon-fri 08:00-18:00; sat 09:00-13:00"):
        assert interpolate(value, {**DOTENV, "LEADARCHIVE_OFFICE_HOURS": decided}) == decided
    # Unset in .env, the time zone is the service's own default (the local zone), not a
    # written one.
    timezone = compose["x-app"]["environment"]["LEADARCHIVE_TIMEZONE"]
    assert interpolate(timezone, DOTENV) == ""
    assert interpolate(timezone, {"LEADARCHIVE_TIMEZONE": "America/Chicago"}) == "America/Chicago"


def test_an_empty_rate_limit_in_dotenv_means_no_limit(compose: dict[str, Any]) -> None:
    value = compose["x-app"]["environment"]["LEADARCHIVE_RATE_LIMIT"]
    assert interpolate(value, {**DOTENV, "LEADARCHIVE_RATE_LIMIT": ""}) == ""
    assert interpolate(value, DOTENV) == "100/second"
