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

import pytest
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


def _with_real_secret(settings: Any) -> Any:
    """The settings as an operator fills them in: .env.example's `change-me` is a placeholder
    the API refuses to start with, so these route checks use a long secret."""
    from pydantic import SecretStr

    return settings.model_copy(update={"jwt_secret": SecretStr("deployment-test-" + "0" * 40)})


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
    routes = {
        getattr(route, "path", None) for route in create_app(_with_real_secret(settings)).routes
    }
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
    lock_python = re.search(
        r"--python-version (\S+)", (ROOT / "requirements-prod.lock").read_text()
    )
    assert values["FROM"] == [f"python:{lock_python[1]}-slim"], "image Python != lock's Python"
    runs = " ".join(values["RUN"])
    assert "pip install -r requirements-prod.lock" in runs
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


# --- Prometheus and Grafana ----------------------------------------------------------------

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "dashboards" / "grafana"
METRIC_NAME = re.compile(r"\b(oximon_[a-z0-9_]+|up)\b(?!\s*\()")


def _mounted_file(service: dict[str, Any], target: str) -> Path:
    """The repository file a container path of `service` comes from (file or folder mount)."""
    for source, mount in _mounts(service):
        if _is_bind(source) and (target == mount or target.startswith(mount.rstrip("/") + "/")):
            return ROOT / source / target[len(mount) :].lstrip("/")
    raise AssertionError(f"{target} is not mounted from the repository")


def _prometheus_config() -> tuple[dict[str, Any], Path]:
    prometheus = _services()["prometheus"]
    flags = dict(a.split("=", 1) for a in _command(prometheus) if a.startswith("--"))
    path = _mounted_file(prometheus, flags["--config.file"])
    return yaml.safe_load(path.read_text()), path


def _metrics_endpoints() -> dict[str, tuple[str, str]]:
    """host:port -> (job kind, metrics path) for every oximon service that serves metrics."""
    endpoints = {}
    for name, service in _oximon_services().items():
        env, settings = _service_settings(service)
        kind = _command(service)[0]
        if kind == "api":
            endpoints[f"{name}:{settings.api_port}"] = (kind, "/metrics")
        elif settings.metrics_port:
            assert settings.metrics_host == "0.0.0.0", f"{name}: metrics only on loopback"  # noqa: S104
            endpoints[f"{name}:{settings.metrics_port}"] = (kind, "/metrics")
    return endpoints


def test_prometheus_scrapes_every_oximon_service_where_it_serves_metrics() -> None:
    from api.app import create_app

    config, _ = _prometheus_config()
    scraped = {}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                scraped[target] = job.get("metrics_path", "/metrics")
    endpoints = _metrics_endpoints()
    kinds = {kind for kind, _ in endpoints.values()}
    assert {"ingest", "alerting", "api"} <= kinds, f"services without metrics: {kinds}"
    for target, (_, path) in endpoints.items():
        assert scraped.get(target) == path, f"Prometheus does not scrape {target}{path}"
    oximon_targets = {t for t in scraped if not t.startswith(("127.0.0.1", "localhost"))}
    assert oximon_targets == set(endpoints), "a scrape target is not a compose service"
    _, api_settings = _service_settings(_oximon_services()["api"])
    routes = {
        getattr(route, "path", None) for route in create_app(_with_real_secret(api_settings)).routes
    }
    assert "/metrics" in routes


def _promtool() -> str:
    import shutil

    path = shutil.which("promtool")
    assert path, "promtool is missing: scripts/install-system.sh installs Debian's prometheus"
    return path


def test_promtool_accepts_the_mounted_config_and_the_alert_rules_pass_their_unit_tests(
    tmp_path: Path,
) -> None:
    import subprocess

    config, path = _prometheus_config()
    prometheus = _services()["prometheus"]
    # The config names rule files by their container path: map them back to the repository.
    config["rule_files"] = [str(_mounted_file(prometheus, f)) for f in config["rule_files"]]
    for rules in config["rule_files"]:
        assert Path(rules).is_file(), f"{rules} is not in the repository"
    local = tmp_path / path.name
    local.write_text(yaml.safe_dump(config))
    for args in (
        ["check", "config", str(local)],
        ["test", "rules", str(PROMETHEUS_DIR / "rules" / "oximon.rules.test.yml")],
    ):
        result = subprocess.run(  # noqa: S603
            [_promtool(), *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def _exported_metric_names() -> set[str]:
    """Every series name the oximon processes can expose on /metrics."""
    from prometheus_client import REGISTRY

    import api.sms  # noqa: F401 - registers its counters
    import ingest.metrics  # noqa: F401
    from alerting.metrics import FAMILIES

    names = {name for name, _, _ in FAMILIES}
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _grafana_dashboards() -> dict[str, dict[str, Any]]:
    files = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert files, "no Grafana dashboard"
    return {f.name: json.loads(f.read_text()) for f in files}


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel target and every alert rule."""
    found = []
    for name, dashboard in _grafana_dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found.append((f"{name}: {panel['title']}", target["expr"]))
    for rules_file in (PROMETHEUS_DIR / "rules").glob("*.rules.yml"):
        for group in yaml.safe_load(rules_file.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((f"{rules_file.name}: {rule.get('alert')}", rule["expr"]))
    return found


def test_every_metric_in_the_dashboards_and_alert_rules_is_one_the_code_exports() -> None:
    exported = _exported_metric_names()
    expressions = _expressions()
    assert len(expressions) >= 10
    for where, expr in expressions:
        # Label values ("oximon-ingest") and label names are not metric names.
        bare = re.sub(r"\{[^}]*\}", "", re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr))
        names = set(METRIC_NAME.findall(bare))
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported - {"up"}
        assert not unknown, f"{where}: {sorted(unknown)} not exported by oximon"


def test_the_dashboards_cover_what_operators_watch() -> None:
    text = json.dumps(_grafana_dashboards())
    for metric in (
        "oximon_ingest_readings_stored_total",  # ingest rate
        "oximon_ingest_lag_seconds",  # lag
        "oximon_ingest_dead_letters_total",  # dead letters by reason
        "oximon_alerts_unresolved",  # open alerts by severity
        "oximon_alert_acknowledge_seconds",  # time to acknowledge
        "oximon_notifications_last_hour",  # SMS delivery
        "oximon_devices",  # fleet
        "oximon_database_size_bytes",  # database size
    ):
        assert metric in text, f"no panel shows {metric}"
    rules = {rule for where, _ in _expressions() for rule in [where.split(": ")[-1]]}
    assert {"IngestStalled", "IngestLagHigh", "DeadLettersRising", "SmsFailing"} <= rules


def test_grafana_is_provisioned_from_the_files_the_suite_checks() -> None:
    grafana = _services()["grafana"]
    datasources = yaml.safe_load(
        _mounted_file(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    [source] = datasources
    prometheus = _services()["prometheus"]
    container_ports = {str(p).rsplit(":", 1)[-1] for p in prometheus.get("ports") or []}
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()
    assert host == "prometheus" and port in container_ports
    assert "prometheus" in grafana["depends_on"]
    providers = yaml.safe_load(
        _mounted_file(grafana, "/etc/grafana/provisioning/dashboards/oximon.yml").read_text()
    )["providers"]
    folder = _mounted_file(grafana, providers[0]["options"]["path"])
    assert folder == GRAFANA_DIR / "dashboards", folder
    for name, dashboard in _grafana_dashboards().items():
        for panel in dashboard["panels"]:
            uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
            assert uids == {source["uid"]}, f"{name}: {panel['title']} uses {uids}"
    assert "GF_SECURITY_ADMIN_PASSWORD" in _environment(grafana)


def test_the_database_metrics_report_alerts_sms_fleet_and_size_from_the_real_schema(
    stack: Any, db: Any, patient: int
) -> None:
    from alerting.metrics import DatabaseCollector

    db.execute(
        "INSERT INTO alerts (patient_id, kind, severity, opened_at, updated_at, reason,"
        " status, acknowledged_at) VALUES"
        " (%s, 'spo2_low', 'red', now() - interval '10 minutes', now(), 'r', 'acknowledged',"
        "  now() - interval '7 minutes'),"
        " (%s, 'trend', 'amber', now(), now(), 'a', 'open', NULL)",
        (patient, patient),
    )
    db.execute(
        "INSERT INTO notifications (created_at, channel, recipient, body, state, next_attempt_at)"
        " VALUES (now(), 'sms', '+4799000001', 'x', 'failed', now()),"
        " (now(), 'sms', '+4799000002', 'x', 'delivered', now())"
    )
    db.execute(
        "INSERT INTO devices (id, patient_id, online, last_seen_at) VALUES"
        " ('ox-m-1', %s, true, now()), ('ox-m-2', NULL, NULL, NULL)",
        (patient,),
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in DatabaseCollector(stack.database_url).collect()
        for s in family.samples
    }
    assert samples[("oximon_database_up", ())] == 1
    assert (
        samples[("oximon_alerts_unresolved", (("severity", "red"), ("status", "acknowledged")))]
        == 1
    )
    assert samples[("oximon_alerts_unresolved", (("severity", "amber"), ("status", "open")))] == 1
    ack = samples[("oximon_alert_acknowledge_seconds", (("quantile", "0.5"), ("severity", "red")))]
    assert ack == 180
    sms = (("channel", "sms"), ("state", "failed"))
    assert samples[("oximon_notifications_last_hour", sms)] == 1
    assert samples[("oximon_devices", (("state", "online"),))] == 1
    assert samples[("oximon_devices", (("state", "never_seen"),))] == 1
    assert samples[("oximon_database_size_bytes", ())] > 1_000_000
    assert samples[("oximon_table_size_bytes", (("table", "readings"),))] > 0


def test_the_database_metrics_say_so_when_the_database_is_unreachable() -> None:
    from alerting.metrics import DatabaseCollector
    from oximon.localstack import free_port

    collector = DatabaseCollector(f"postgresql://oximon@127.0.0.1:{free_port()}/x", timeout_s=1)
    [family] = list(collector.collect())
    assert (family.name, family.samples[0].value) == ("oximon_database_up", 0)


def _pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.MULTILINE))


def test_the_image_lock_is_the_tested_lock_without_the_dev_tools() -> None:
    prod, full = _pins(ROOT / "requirements-prod.lock"), _pins(ROOT / "requirements.lock")
    # The image runs exactly the versions the suite ran with.
    differ = {name: (pin, full.get(name)) for name, pin in prod.items() if full.get(name) != pin}
    assert not differ, f"requirements-prod.lock is stale (regenerate it): {differ}"
    runtime = {
        re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        for dep in _pyproject()["project"]["dependencies"]
    }
    pinned = {name.lower().replace("_", "-") for name in prod}
    assert runtime <= pinned, f"not in requirements-prod.lock: {sorted(runtime - pinned)}"
    dev_only = {"pytest", "mypy", "ruff", "playwright", "locust"}
    assert not dev_only & pinned, f"dev tools in the image: {sorted(dev_only & pinned)}"


def test_no_service_is_made_to_run_as_root() -> None:
    # The oximon image's USER is checked above; the others' images run as their own users
    # (postgres, mosquitto after start, nobody, grafana) unless the compose file overrides it.
    for name, service in _services().items():
        user = str(service.get("user", "")).split(":")[0]
        assert user not in ("root", "0"), f"{name} runs as root"
        assert not service.get("privileged"), f"{name} is privileged"


def test_the_api_refuses_env_examples_placeholder_secret() -> None:
    """Copying .env.example without replacing `change-me` must not start an API whose tokens
    anybody could sign."""
    from api.app import create_app

    [service] = [s for s in _oximon_services().values() if _command(s)[0] == "api"]
    _, settings = _service_settings(service)
    with pytest.raises(RuntimeError, match="OXIMON_JWT_SECRET"):
        create_app(settings)
