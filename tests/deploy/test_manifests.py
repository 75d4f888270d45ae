"""Every deployment manifest agrees with the code: env names, values, ports, images, topics.

One source of truth: variable names come from the pydantic settings classes, topic names
from omnistitch.topics, versions from pyproject.toml and deploy/local/pom.xml. There is no
cluster or Docker engine here, so the manifests are parsed (PyYAML) and checked.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import yaml
from pydantic_settings import BaseSettings

from omnistitch.settings import (
    CollectorSettings,
    KafkaSettings,
    LagExporterSettings,
    WorkerSettings,
)
from omnistitch.topics import RAW_EVENTS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
PROMETHEUS = REPO / "deploy" / "prometheus"

COMMANDS: dict[str, type[BaseSettings]] = {
    "worker": WorkerSettings,
    "collector": CollectorSettings,
    "lag-exporter": LagExporterSettings,
}
PORT_FIELD = {
    "worker": "api_port",
    "collector": "collector_port",
    "lag-exporter": "lag_exporter_port",
}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
KAFKA_VERSION = re.search(
    r"<kafka.version>(.+)</kafka.version>", (REPO / "deploy" / "local" / "pom.xml").read_text()
).group(1)  # type: ignore[union-attr]
IMAGE = f"ghcr.io/omnistitch/omnistitch:{VERSION}"

Doc = dict[str, Any]


def env_names(cls: type[BaseSettings]) -> set[str]:
    return {f"OMNISTITCH_{name.upper()}" for name in cls.model_fields}


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s(kind: str) -> list[Doc]:
    return [
        d
        for path in sorted(K8S.glob("*.yaml"))
        if path.name not in ("kustomization.yaml", "secret.example.yaml")
        for d in load_all(path)
        if d["kind"] == kind
    ]


def workloads() -> Iterator[Doc]:
    yield from k8s("StatefulSet")
    yield from k8s("Deployment")


def containers() -> Iterator[tuple[Doc, Doc]]:
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def config_map() -> dict[str, str]:
    (config,) = k8s("ConfigMap")
    data: dict[str, str] = config["data"]
    return data


def container_env(container: Doc) -> dict[str, str]:
    """The container's OMNISTITCH_* environment, with stand-ins for what the cluster fills in."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "omnistitch-config"
        env.update(config_map())
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
            env[var["name"]] = "10.0.0.7"
        else:
            env[var["name"]] = "from-a-secret"
    return env


def settings_from(cls: type[BaseSettings], env: dict[str, str]) -> BaseSettings:
    """Validate ``env`` with the process's settings class, as the process would at start."""
    values: dict[str, Any] = {
        name.removeprefix("OMNISTITCH_").lower(): value
        for name, value in env.items()
        if name in env_names(cls)
    }
    if "ssl_ca_location" in values:  # a mounted Secret in the cluster; any PEM file here
        values["ssl_ca_location"] = certifi.where()
    if "write_keys" in values:
        values["write_keys"] = [k for k in values["write_keys"].split(",") if k]
    return cls(_env_file=None, **values)


def test_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",  # credentials are created out of band
    }
    assert set(kustomization["resources"]) == manifests
    assert kustomization["images"] == [{"name": IMAGE.split(":")[0], "newTag": VERSION}]


def test_every_k8s_variable_is_a_setting_of_its_process() -> None:
    seen = set()
    for workload, container in containers():
        command = container["args"][0]
        seen.add(command)
        names = {v["name"] for v in container.get("env", [])}
        unknown = {n for n in names if n.startswith("OMNISTITCH_")} - env_names(COMMANDS[command])
        assert unknown == set(), f"{workload['metadata']['name']}: not settings of {command}"
    assert seen == set(COMMANDS)
    every_setting = set().union(*(env_names(c) for c in COMMANDS.values()))
    assert set(config_map()) - every_setting == set()
    assert set(config_map()) & env_names(KafkaSettings)


def test_every_k8s_process_starts_with_its_configuration() -> None:
    for _workload, container in containers():
        command = container["args"][0]
        env = container_env(container)
        settings = settings_from(COMMANDS[command], env)
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        ca = env.get("OMNISTITCH_SSL_CA_LOCATION")
        if ca is not None:  # the CA file lives on a mounted volume
            assert any(ca.startswith(m + "/") for m in mounts)
        if isinstance(settings, WorkerSettings):
            assert str(settings.state_dir) in mounts
            assert settings.standby_replicas >= 1
            assert settings.api_host == "10.0.0.7"  # the pod IP: bound and advertised


def test_k8s_ports_probes_and_services_agree_with_the_settings() -> None:
    pod_ports: dict[str, dict[str, int]] = {}
    for workload, container in containers():
        command = container["args"][0]
        settings = settings_from(COMMANDS[command], container_env(container))
        port = getattr(settings, PORT_FIELD[command])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert list(ports.values()) == [port]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"]["path"] == path
            assert container[probe]["httpGet"]["port"] in ports
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        pod_ports[workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]] = (
            ports
        )
    for service in k8s("Service"):
        selected = service["spec"]["selector"]["app.kubernetes.io/name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in pod_ports[selected], service["metadata"]["name"]


def test_every_container_runs_the_project_image_locked_down() -> None:
    for workload, container in containers():
        name = workload["metadata"]["name"]
        assert container["image"] == IMAGE, name
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), name


def test_network_policies_admit_each_pod_on_its_own_port_only() -> None:
    policies = k8s("NetworkPolicy")
    for workload, container in containers():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        port = container["ports"][0]["containerPort"]
        mine = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert any(not p["spec"].get("ingress") for p in mine), "no default deny"
        admitted = {
            rule_port["port"]
            for p in mine
            for rule in p["spec"].get("ingress", [])
            for rule_port in rule["ports"]
        }
        assert admitted == {port}, workload["metadata"]["name"]


def test_keda_scales_the_workers_group_on_raw_events() -> None:
    (scaled,) = k8s("ScaledObject")
    (statefulset,) = k8s("StatefulSet")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": statefulset["metadata"]["name"],
    }
    config = config_map()
    kafka = KafkaSettings(
        _env_file=None,
        bootstrap_servers=config["OMNISTITCH_BOOTSTRAP_SERVERS"],
        topic_prefix=config["OMNISTITCH_TOPIC_PREFIX"],
        raw_partitions=int(config["OMNISTITCH_RAW_PARTITIONS"]),
    )
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == kafka.topic(RAW_EVENTS)
    assert trigger["metadata"]["consumerGroup"] == config["OMNISTITCH_APP_ID"]
    assert trigger["metadata"]["bootstrapServers"] == kafka.bootstrap_servers
    # More workers than raw partitions would sit idle.
    assert scaled["spec"]["minReplicaCount"] <= statefulset["spec"]["replicas"]
    assert scaled["spec"]["maxReplicaCount"] <= kafka.raw_partitions
    (auth,) = k8s("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_secret_keys_referenced_exist_in_the_example() -> None:
    (example,) = load_all(K8S / "secret.example.yaml")
    keys = set(example["stringData"])
    refs = {
        var["valueFrom"]["secretKeyRef"]["key"]
        for _w, c in containers()
        for var in c.get("env", [])
        if var.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        == example["metadata"]["name"]
    }
    (auth,) = k8s("TriggerAuthentication")
    refs |= {ref["key"] for ref in auth["spec"]["secretTargetRef"]}
    assert refs <= keys


def compose() -> Doc:
    doc: Doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


def compose_env(service: Doc) -> dict[str, str]:
    # ${VAR:-default} as compose would expand it with VAR unset.
    return {
        k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
        for k, v in service.get("environment", {}).items()
    }


def test_compose_runs_the_whole_stack_with_valid_settings() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    commands = {}
    for name, service in services.items():
        if "command" not in service or service.get("image") != f"omnistitch:{VERSION}":
            continue
        command = service["command"][0]
        commands[name] = command
        env = compose_env(service)
        assert set(env) <= env_names(COMMANDS[command]), name
        settings = settings_from(COMMANDS[command], env)
        port = getattr(settings, PORT_FIELD[command])
        assert [p.split(":")[1] for p in service["ports"]] == [str(port)], name
        if isinstance(settings, WorkerSettings):
            assert settings.api_host == name  # bound and advertised under its service name
    assert sorted(commands.values()) == ["collector", "lag-exporter", "worker", "worker"]
    assert {"prometheus", "grafana"} <= set(services)


def test_prometheus_scrapes_every_compose_process_under_the_alerts_job_names() -> None:
    services = compose()["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    scraped = set()
    for targets in jobs.values():
        for target in targets:
            host, port = target.split(":")
            if host == "localhost":
                continue
            service = services[host]
            command = service["command"][0]
            settings = settings_from(COMMANDS[command], compose_env(service))
            assert int(port) == getattr(settings, PORT_FIELD[command]), target
            scraped.add(host)
    omnistitch = {n for n, s in services.items() if s.get("image") == f"omnistitch:{VERSION}"}
    assert scraped == omnistitch
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    used_jobs = set(re.findall(r'job="([^"]+)"', alerts))
    assert used_jobs <= set(jobs)
    # In Kubernetes the job is the pod's app.kubernetes.io/name: the same names.
    apps = {
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] for w in workloads()
    }
    assert used_jobs <= apps
    k8s_scrape = yaml.safe_load((PROMETHEUS / "prometheus-k8s.yml").read_text())
    relabels = k8s_scrape["scrape_configs"][0]["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "target_label": "job",
    } in relabels


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    for source in mounts:
        assert (REPO / source).exists(), source
    assert mounts["./deploy/grafana/omnistitch.json"].startswith(
        yaml.safe_load(
            (REPO / "deploy/grafana/provisioning/dashboards/omnistitch.yml").read_text()
        )["providers"][0]["options"]["path"]
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_image_exposes_each_default_port(command: str) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for p in line.split()
    }
    default = COMMANDS[command].model_fields[PORT_FIELD[command]].default
    assert default in exposed


def test_the_image_runs_as_a_numeric_non_root_user_from_a_relocatable_venv() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    venv = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", dockerfile)
    assert venv is not None
    assert f"COPY --from=build {venv.group(1)} {venv.group(1)}" in dockerfile
