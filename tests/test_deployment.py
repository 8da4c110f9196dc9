"""The production shape (docker-compose.yml, Dockerfile, Mosquitto config) agrees with the code.

No Docker engine runs here, so the files are read and checked against the real command line,
settings and packages: a renamed subcommand, a misspelt OXIMON_ variable (silently ignored by
the settings) or a missing mounted file fails here rather than on the production host.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import typer
import yaml

from core.settings import Settings
from oximon.cli import app as cli_app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

PREFIX = "OXIMON_"
SETTING_VARIABLES = {PREFIX + name.upper() for name in Settings.model_fields}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)$")
# Compose interpolation: $$ (a literal $), ${NAME}, ${NAME:?err}, ${NAME:-default}, …, $NAME.
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}")
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@]*:(?P<password>.*)@(?P<host>[^@:/]+)")
URL_HOST = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^@]*@)?(?P<host>[^@:/]+)")
DESIGN_SERVICES = {"migrate", "ingest", "alerting", "api"}


# --- reading the files ---------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _oximon_services() -> dict[str, dict[str, Any]]:
    """Services run from the image built by ./Dockerfile."""
    services = {name: svc for name, svc in _services().items() if "build" in svc}
    assert services, "no service is built from the Dockerfile"
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def _references(text: str) -> list[tuple[str, str | None]]:
    """(variable name, operator) of every interpolation in a compose string."""
    refs = []
    for match in INTERPOLATION.finditer(text):
        if match.group(0) != "$$":
            refs.append((match["name"] or match["bare"], match["op"]))
    return refs


def _interpolate(text: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match["name"] or match["bare"]
        if name in variables:
            return variables[name]
        assert match["op"] in (":-", "-"), f"{name} is not set in .env.example"
        return match["arg"]

    return INTERPOLATION.sub(replace, text)


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [*_strings(key), *_strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume of a service, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    return mounts


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _service_settings(service: dict[str, Any]) -> tuple[dict[str, str], Settings]:
    """The environment an oximon service gets from .env.example and the compose file."""
    example = _env_example()
    env = {**example, **{k: _interpolate(v, example) for k, v in _environment(service).items()}}
    fields = {k.removeprefix(PREFIX).lower(): v for k, v in env.items() if k.startswith(PREFIX)}
    return env, Settings(**fields)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- the compose file ----------------------------------------------------------------------


def test_compose_file_parses_into_services_that_each_name_an_image_or_a_build() -> None:
    services = _services()
    assert isinstance(services, dict) and services
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"


def test_every_service_command_is_a_real_oximon_subcommand() -> None:
    cli = typer.main.get_command(cli_app)
    for name, service in _oximon_services().items():
        assert service.get("entrypoint") in (None, ["oximon"], "oximon"), f"{name}: entrypoint"
        args = _command(service)
        assert args, f"{name}: no command (the image would only print --help)"
        # Typer vendors its own click: recognise a group by its subcommands, not by its class.
        command: Any = cli
        path = []
        while getattr(command, "commands", None) is not None:
            assert args and args[0] in command.commands, (
                f"{name}: `oximon {' '.join(path + args)}` is not a command; "
                f"known: {sorted(command.commands)}"
            )
            path.append(args[0])
            command, args = command.commands[args[0]], args[1:]
        # Parses the options as the real command would (unknown or missing ones raise).
        command.make_context(" ".join(path), list(args))


def test_production_runs_every_service_of_the_design() -> None:
    running = {_command(service)[0] for service in _oximon_services().values()}
    assert DESIGN_SERVICES <= running, f"missing: {sorted(DESIGN_SERVICES - running)}"


def test_every_oximon_variable_is_a_real_setting() -> None:
    used = set()
    for service in _services().values():
        used |= {key for key in _environment(service) if key.startswith(PREFIX)}
    used |= {name for text in _strings(_compose()) for name, _ in _references(text)}
    used |= set(_env_example())
    unknown = {name for name in used if name.startswith(PREFIX)} - SETTING_VARIABLES
    assert not unknown, f"not fields of core.settings.Settings (ignored at run time): {unknown}"


def test_each_oximon_service_gets_valid_settings_that_reach_other_containers() -> None:
    service_names = set(_services())
    for name, service in _oximon_services().items():
        env, settings = _service_settings(service)
        if _command(service)[0] == "broker":
            # `oximon broker init` talks only to the broker, as its administrator.
            assert settings.mqtt_admin_url, f"{name}: no broker admin account"
        else:
            assert "OXIMON_DATABASE_URL" in env, f"{name}: no database"
        for key, value in env.items():
            url = URL_HOST.match(value)
            if key.startswith(PREFIX) and url:
                # Inside a container, 127.0.0.1 is the container itself.
                assert url["host"] in service_names, f"{name}: {key} points at {url['host']}"
        # Production runs on real time; a simulated clock would misjudge every timer.
        assert settings.clock_origin is None and settings.clock_speed == 1, name
        if _command(service)[0] == "api":
            assert settings.api_host == "0.0.0.0", "the API must listen beyond its container"
            assert settings.jwt_secret.get_secret_value(), "the API needs OXIMON_JWT_SECRET"
            assert settings.mqtt_admin_url, "the API provisions devices with the admin account"


def test_ingest_workers_have_distinct_mqtt_client_ids() -> None:
    ids = []
    for name, service in _oximon_services().items():
        if _command(service)[0] == "ingest":
            replicas = int((service.get("deploy") or {}).get("replicas", 1))
            ids += [_service_settings(service)[1].mqtt_client_id] * replicas
            assert not service.get("scale"), f"{name}: scaled copies share one client id"
    # The broker disconnects a client when another connects with its id; two workers with one
    # id would knock each other off for ever.
    assert len(ids) >= 2, "one ingest worker: no shared subscription to scale out on"
    assert len(ids) == len(set(ids)), f"ingest workers share MQTT client ids: {ids}"


def test_every_file_mounted_from_the_repo_exists_and_every_volume_is_declared() -> None:
    declared = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        for source, target in _mounts(service):
            if _is_bind(source):
                assert (ROOT / source).exists(), f"{name}: {source} (for {target}) is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
        if "build" in service:
            build = service["build"]
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file(), f"{name}: no Dockerfile"
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            # .env itself holds the secrets and is never in the repository; its template is.
            assert (ROOT / f"{path}.example").is_file(), f"{name}: no {path}.example"


def test_no_secret_has_a_default_or_a_literal_value() -> None:
    for text in _strings(_compose()):
        for variable, op in _references(text):
            if SECRET_NAME.search(variable):
                assert op in (":?", "?"), f"${{{variable}}} must be required (:?), got {op!r}"
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.fullmatch(value), f"{name}: {key} is not ${{…:?…}}"
            credentials = URL_PASSWORD.match(value)
            if credentials:
                assert REQUIRED_REF.fullmatch(credentials["password"]), (
                    f"{name}: {key} holds a literal password"
                )


def test_every_variable_the_compose_file_needs_is_in_env_example() -> None:
    example = _env_example()
    needed = {
        variable
        for text in _strings(_compose())
        for variable, op in _references(text)
        if op not in (":-", "-")
    }
    # $$NAME is the container's own variable, not compose's; _references already skips it.
    assert needed, "the compose file interpolates nothing from .env"
    assert needed <= set(example), f"missing from .env.example: {sorted(needed - set(example))}"


def test_env_example_holds_placeholders_not_secrets() -> None:
    for variable, value in _env_example().items():
        if SECRET_NAME.search(variable):
            assert value in ("", "change-me"), f"{variable} has a real-looking value"


def test_every_service_restarts_and_long_running_ones_wait_for_health() -> None:
    services = _services()
    one_shots = {
        target
        for service in services.values()
        for target, spec in (service.get("depends_on") or {}).items()
        if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully"
    }
    for name, service in services.items():
        restart = service.get("restart")
        # An unquoted `no` is YAML's false: compose would refuse it.
        assert isinstance(restart, str), f"{name}: restart policy {restart!r}"
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
        if name in one_shots:
            assert restart in ("no", "on-failure") or restart.startswith("on-failure:"), name
            continue
        assert restart in ("unless-stopped", "always"), f"{name}: restart: {restart}"
        waits = any(spec.get("condition") == "service_healthy" for spec in depends_on.values())
        assert "healthcheck" in service or waits, f"{name}: no healthcheck and waits on none"


def test_api_healthcheck_probes_healthz_on_the_published_port() -> None:
    from api.app import create_app

    (name, service), *others = [
        (n, s) for n, s in _oximon_services().items() if _command(s)[0] == "api"
    ]
    _, settings = _service_settings(service)
    routes = {getattr(route, "path", None) for route in create_app(settings).routes}
    assert "/healthz" in routes
    probe = " ".join(_strings(service["healthcheck"]["test"]))
    assert f"127.0.0.1:{settings.api_port}/healthz" in probe, probe
    container_ports = {str(port).rsplit(":", 1)[-1] for port in service.get("ports") or []}
    assert str(settings.api_port) in container_ports, f"{name}: port not published"


def test_timescaledb_is_the_licensed_image_and_matches_the_database_url() -> None:
    database = _services()["timescaledb"]
    image = database["image"]
    assert image.startswith("timescale/timescaledb:") and "oss" not in image, image
    assert "pg_isready" in " ".join(_strings(database["healthcheck"]["test"]))
    env = _environment(database)
    url = _environment(_oximon_services()["migrate"])["OXIMON_DATABASE_URL"]
    user, password, database_name = re.fullmatch(
        r"postgresql://([^:]+):(.+)@timescaledb:5432/(\w+)", url
    ).groups()
    assert (user, password, database_name) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )


# --- Mosquitto -----------------------------------------------------------------------------


def test_mosquitto_config_refuses_anonymous_clients_and_loads_dynamic_security() -> None:
    broker = _services()["mosquitto"]
    (source, target), *_ = [(s, t) for s, t in _mounts(broker) if t.endswith(".conf")]
    assert target in " ".join(_command(broker)), "the broker is not started with the mounted file"
    options: dict[str, list[str]] = {}
    for line in (ROOT / source).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            options.setdefault(key, []).append(value.strip())
    assert options["allow_anonymous"] == ["false"]
    assert options["per_listener_settings"] == ["false"], "a listener could allow anonymous"
    assert options["plugin"] == ["/usr/lib/mosquitto_dynamic_security.so"]
    assert options["persistence"] == ["true"]
    # Accounts and queued messages live on a named volume, so they survive re-creation.
    volumes = [t.rstrip("/") + "/" for s, t in _mounts(broker) if not _is_bind(s)]
    for kept in (options["plugin_opt_config_file"][0], options["persistence_location"][0]):
        assert any(kept.startswith(v) for v in volumes), f"{kept} is not on a named volume"
    mqtt_url = _environment(_oximon_services()["api"])["OXIMON_MQTT_URL"]
    port = re.search(r"@mosquitto:(\d+)", mqtt_url)[1]
    # The plain listener the services use, and TLS on 8883 for devices.
    assert sorted(listener.split()[0] for listener in options["listener"]) == sorted({port, "8883"})
    assert options["certfile"] == ["/mosquitto/certs/server.crt"]


# --- the image -----------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_image_of_every_package_from_the_lock() -> None:
    instructions = _dockerfile()
    pyproject = _pyproject()
    values = {keyword: [a for k, a in instructions if k == keyword] for keyword, _ in instructions}
    lock_python = re.search(r"--python-version (\S+)", (ROOT / "requirements.lock").read_text())
    assert values["FROM"] == [f"python:{lock_python[1]}-slim"], "image Python != lock's Python"
    runs = " ".join(values["RUN"])
    assert "pip install -r requirements.lock" in runs
    assert "pip install --no-deps ." in runs
    copied = set()
    for args in values["COPY"]:
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            copied.add(Path(source).parts[0])
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    assert not {".env", ".local", ".venv", "."} & copied, "the image must not hold local state"
    user = values["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), "the services must not run as root"
    assert json.loads(values["ENTRYPOINT"][-1]) == ["oximon"]
    assert "oximon" in pyproject["project"]["scripts"]
