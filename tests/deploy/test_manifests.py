"""Every deployment manifest agrees with the code: env names, values, ports, images, topics.

One source of truth: variable names come from the pydantic settings classes, topic names
from omnistitch.topics, versions from pyproject.toml and deploy/local/pom.xml, and the
channel connectors from the ``omnistitch.connectors`` entry points (a connector that is
installed but missing from a manifest fails here). There is no cluster or Docker engine
here, so the manifests are parsed (PyYAML) and checked.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import certifi
import pytest
import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from connectors.base import available, load_connector
from omnistitch.settings import (
    CollectorSettings,
    KafkaSettings,
    LagExporterSettings,
    WorkerSettings,
)
from omnistitch.topics import RAW_EVENTS, ingest_group

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
PROMETHEUS = REPO / "deploy" / "prometheus"


@dataclass(frozen=True)
class Process:
    """One omnistitch command line: the settings it validates at start, the ports it serves."""

    args: tuple[str, ...]
    settings: tuple[type[BaseSettings], ...]
    #: Fields of ``settings[0]`` holding the ports it listens on; the first serves
    #: /healthz, /readyz and /metrics.
    port_fields: tuple[str, ...]

    def __str__(self) -> str:
        return " ".join(self.args)

    def env_names(self) -> set[str]:
        return set().union(*(env_names(cls) for cls in self.settings))

    def start(self, env: Mapping[str, str]) -> list[BaseSettings]:
        return [settings_from(cls, env) for cls in self.settings]

    def ports(self, env: Mapping[str, str]) -> list[int]:
        """The ports it listens on, with ``env``; the metrics port first."""
        own = self.start(env)[0]
        return [getattr(own, name) for name in self.port_fields]

    def default_ports(self) -> list[int]:
        fields = self.settings[0].model_fields
        return [fields[name].default for name in self.port_fields]


def connector_process(name: str) -> Process:
    """``omnistitch connector run NAME``: its own settings, then the shared Kafka ones."""
    settings = load_connector(name).settings_class
    # An HTTP connector serves everything on ``port``; one that is not HTTP (email: SMTP on
    # ``port``) serves /healthz, /readyz and /metrics on ``http_port``.
    ports = ("http_port", "port") if "http_port" in settings.model_fields else ("port",)
    return Process(("connector", "run", name), (settings, KafkaSettings), ports)


#: Every process a deployment runs, keyed by its command line.
PROCESSES: dict[tuple[str, ...], Process] = {
    p.args: p
    for p in [
        Process(("worker",), (WorkerSettings,), ("api_port",)),
        Process(("collector",), (CollectorSettings,), ("collector_port",)),
        Process(("lag-exporter",), (LagExporterSettings,), ("lag_exporter_port",)),
        *(connector_process(name) for name in sorted(available())),
    ]
}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
KAFKA_VERSION = re.search(
    r"<kafka.version>(.+)</kafka.version>", (REPO / "deploy" / "local" / "pom.xml").read_text()
).group(1)  # type: ignore[union-attr]
IMAGE = f"ghcr.io/omnistitch/omnistitch:{VERSION}"

Doc = dict[str, Any]


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    return {f"{prefix}{name.upper()}" for name in cls.model_fields}


def is_secret(field: FieldInfo) -> bool:
    """A ``SecretStr`` setting, or a container of them (``dict[str, SecretStr]``)."""
    return "SecretStr" in repr(field.annotation)


def secret_settings(process: Process) -> dict[str, bool]:
    """The process's secret variables, each with whether it is required."""
    return {
        f"{cls.model_config.get('env_prefix') or ''}{name.upper()}": field.is_required()
        for cls in process.settings
        for name, field in cls.model_fields.items()
        if is_secret(field)
    }


def process_of(args: Sequence[str]) -> Process:
    process = PROCESSES.get(tuple(args))
    assert process is not None, f"{list(args)}: not an omnistitch process (or not installed)"
    return process


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


def app_name(workload: Doc) -> str:
    name: str = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    return name


def config_map() -> dict[str, str]:
    (config,) = k8s("ConfigMap")
    data: dict[str, str] = config["data"]
    return data


def example_secrets() -> dict[tuple[str, str], str]:
    """``(Secret name, key) -> value`` of every Secret in secret.example.yaml."""
    return {
        (doc["metadata"]["name"], key): str(value)
        for doc in load_all(K8S / "secret.example.yaml")
        if doc["kind"] == "Secret"
        for key, value in doc["stringData"].items()
    }


def container_env(container: Doc) -> dict[str, str]:
    """The container's OMNISTITCH_* environment, with stand-ins for what the cluster fills in.

    A Secret's value is the one of secret.example.yaml; an optional key it does not have
    stays unset, as in the cluster.
    """
    env: dict[str, str] = {}
    secrets = example_secrets()
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
            ref = var["valueFrom"]["secretKeyRef"]
            value = secrets.get((ref["name"], ref["key"]))
            assert value is not None or ref.get("optional"), f"no example of {ref}"
            if value is not None:
                env[var["name"]] = value
    return env


def settings_from(cls: type[BaseSettings], env: Mapping[str, str]) -> BaseSettings:
    """Validate ``env`` with a settings class, from the environment as the process would."""
    env = dict(env)
    if "OMNISTITCH_SSL_CA_LOCATION" in env:  # a mounted Secret in the cluster; any PEM here
        env["OMNISTITCH_SSL_CA_LOCATION"] = certifi.where()
    with patch.dict(os.environ, env, clear=True):
        return cls(_env_file=None)


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
        process = process_of(container["args"])
        seen.add(process.args)
        names = {v["name"] for v in container.get("env", [])}
        unknown = {n for n in names if n.startswith("OMNISTITCH_")} - process.env_names()
        assert unknown == set(), f"{workload['metadata']['name']}: not settings of {process}"
    assert seen == set(PROCESSES), "every process (each connector too) has a workload"
    every_setting = set().union(*(p.env_names() for p in PROCESSES.values()))
    assert set(config_map()) - every_setting == set()
    assert set(config_map()) & env_names(KafkaSettings)


def test_every_k8s_process_starts_with_its_configuration() -> None:
    for _workload, container in containers():
        process = process_of(container["args"])
        env = container_env(container)
        settings = process.start(env)
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        ca = env.get("OMNISTITCH_SSL_CA_LOCATION")
        if ca is not None:  # the CA file lives on a mounted volume
            assert any(ca.startswith(m + "/") for m in mounts)
        if isinstance(settings[0], WorkerSettings):
            assert str(settings[0].state_dir) in mounts
            assert settings[0].standby_replicas >= 1
            assert settings[0].api_host == "10.0.0.7"  # the pod IP: bound and advertised


def test_k8s_secrets_come_from_secrets_and_the_required_ones_are_set() -> None:
    assert set(config_map()).isdisjoint(
        set().union(*(secret_settings(p) for p in PROCESSES.values()))
    ), "a secret in the ConfigMap"
    for workload, container in containers():
        name = workload["metadata"]["name"]
        env = {v["name"]: v for v in container.get("env", [])}
        for var, required in secret_settings(process_of(container["args"])).items():
            if var not in env:
                assert not required, f"{name}: {var} is required"
                continue
            ref = env[var].get("valueFrom", {}).get("secretKeyRef")
            assert ref is not None, f"{name}: {var} must come from a Secret"
            if required:
                assert not ref.get("optional"), f"{name}: {var} is required"


def test_k8s_ports_probes_and_services_agree_with_the_settings() -> None:
    pod_ports: dict[str, dict[str, int]] = {}
    for workload, container in containers():
        name = workload["metadata"]["name"]
        process = process_of(container["args"])
        metrics_port, *_ = expected = process.ports(container_env(container))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert sorted(ports.values()) == sorted(expected), name
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"]["path"] == path
            assert ports[container[probe]["httpGet"]["port"]] == metrics_port, name
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(metrics_port), name
        assert annotations["prometheus.io/path"] == "/metrics", name
        pod_ports[app_name(workload)] = ports
    for service in k8s("Service"):
        selected = service["spec"]["selector"]["app.kubernetes.io/name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in pod_ports[selected], service["metadata"]["name"]
    served = {s["spec"]["selector"]["app.kubernetes.io/name"] for s in k8s("Service")}
    assert set(pod_ports) <= served, "a workload without a Service"


def test_every_container_runs_the_project_image_locked_down() -> None:
    for workload, container in containers():
        name = workload["metadata"]["name"]
        assert container["image"] == IMAGE, name
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), name


def test_network_policies_admit_each_pod_on_its_own_ports_only() -> None:
    policies = k8s("NetworkPolicy")
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {
            port["containerPort"]
            for container in workload["spec"]["template"]["spec"]["containers"]
            for port in container["ports"]
        }
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
        assert admitted == ports, workload["metadata"]["name"]


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
    # The raw topic is read by the ingest stage's group, not faust's (pipeline/ingest.py).
    assert trigger["metadata"]["consumerGroup"] == ingest_group(config["OMNISTITCH_APP_ID"])
    assert trigger["metadata"]["bootstrapServers"] == kafka.bootstrap_servers
    # More workers than raw partitions would sit idle.
    assert scaled["spec"]["minReplicaCount"] <= statefulset["spec"]["replicas"]
    assert scaled["spec"]["maxReplicaCount"] <= kafka.raw_partitions
    (auth,) = k8s("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_secret_keys_referenced_exist_in_the_example() -> None:
    examples = example_secrets()
    refs = {
        (ref["name"], ref["key"])
        for _w, c in containers()
        for var in c.get("env", [])
        if (ref := var.get("valueFrom", {}).get("secretKeyRef")) is not None
    }
    (auth,) = k8s("TriggerAuthentication")
    refs |= {(ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs <= set(examples)


def compose() -> Doc:
    doc: Doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


#: What a compose file's ``${VAR:?message}`` stands for here (the host must set it).
FROM_THE_HOST = "a-value-from-the-host-environment"


def compose_env(service: Doc) -> dict[str, str]:
    # ${VAR:-default} as compose would expand it with VAR unset; ${VAR:?...} as if set.
    env = {}
    for key, value in service.get("environment", {}).items():
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        value = re.sub(r"\$\{\w+:\?[^}]*\}", FROM_THE_HOST, value)
        assert "${" not in value, f"{key}: {value}"
        env[key] = value
    return env


def omnistitch_services() -> dict[str, Doc]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == f"omnistitch:{VERSION}"
    }


def test_compose_runs_the_whole_stack_with_valid_settings() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    commands: Counter[tuple[str, ...]] = Counter()
    for name, service in omnistitch_services().items():
        process = process_of(service["command"])
        commands[process.args] += 1
        env = compose_env(service)
        assert set(env) <= process.env_names(), name
        settings = process.start(env)
        metrics_port, *_ = ports = process.ports(env)
        assert sorted(int(p.split(":")[1]) for p in service["ports"]) == sorted(ports), name
        assert f":{metrics_port}/healthz" in " ".join(service["healthcheck"]["test"]), name
        assert service["depends_on"]["kafka"] == {"condition": "service_healthy"}, name
        if isinstance(settings[0], WorkerSettings):
            assert settings[0].api_host == name  # bound and advertised under its service name
    assert commands == Counter({**dict.fromkeys(PROCESSES, 1), ("worker",): 2})
    assert {"prometheus", "grafana"} <= set(services)


def test_compose_secrets_come_from_the_host_environment() -> None:
    for name, service in omnistitch_services().items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        for var, required in secret_settings(process_of(service["command"])).items():
            if var not in env:
                assert not required, f"{name}: {var} is required"
                continue
            # The host's variable of the same name (a placeholder default at most).
            assert re.fullmatch(rf"\$\{{{var}(:[-?][^}}]*)?\}}", env[var]), f"{name}: {var}"


def test_prometheus_scrapes_every_compose_process_under_the_alerts_job_names() -> None:
    services = omnistitch_services()
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    # In Kubernetes the job is the pod's app.kubernetes.io/name: the same names, the same
    # processes.
    k8s_jobs = {
        app_name(w): tuple(c["args"])
        for w in workloads()
        for c in w["spec"]["template"]["spec"]["containers"]
    }
    scraped = set()
    for job, targets in jobs.items():
        for target in targets:
            host, port = target.split(":")
            if host == "localhost":
                continue
            process = process_of(services[host]["command"])
            assert int(port) == process.ports(compose_env(services[host]))[0], target
            assert k8s_jobs.get(job) == process.args, f"job {job}: not {process} in k8s"
            scraped.add(host)
    assert scraped == set(services)
    assert {process_of(s["command"]).args for s in services.values()} == set(PROCESSES)
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    used_jobs = set(re.findall(r'job="([^"]+)"', alerts))
    assert used_jobs <= set(jobs)
    assert used_jobs <= set(k8s_jobs)


def test_prometheus_scrapes_every_k8s_pod_under_its_app_name() -> None:
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    (job,) = yaml.safe_load((PROMETHEUS / "prometheus-k8s.yml").read_text())["scrape_configs"]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    assert namespace in discovery["namespaces"]["names"]
    relabels = job["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    } in relabels
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "target_label": "job",
    } in relabels
    # Each pod is annotated with its metrics port (checked with the ports above).
    annotated = {
        tuple(c["args"])
        for w in workloads()
        if w["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/scrape") == "true"
        for c in w["spec"]["template"]["spec"]["containers"]
    }
    assert annotated == set(PROCESSES)


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


@pytest.mark.parametrize("process", PROCESSES.values(), ids=str)
def test_the_image_exposes_each_default_port(process: Process) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for p in line.split()
    }
    assert set(process.default_ports()) <= exposed


def test_the_image_runs_as_a_numeric_non_root_user_from_a_relocatable_venv() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    venv = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", dockerfile)
    assert venv is not None
    assert f"COPY --from=build {venv.group(1)} {venv.group(1)}" in dockerfile
