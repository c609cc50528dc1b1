"""The Helm chart (deploy/helm/interest-stream), offline: `helm lint`, then every rendering checked
by kubeconform -strict against Kubernetes' and KEDA's (and the Prometheus operator's) schemas, and
what the chart promises read from the rendered manifests: lag thresholds derived from the measured
rate, replicas within the partitions, GPU and CPU variants, probes, budgets, secrets by reference
only, scraping under the job names the alert rules use."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_schemas import SchemaStore
from deploy_tools import DEPLOY, TOOLS, module_data, require_tool, versions

CHART = DEPLOY / "helm" / "interest-stream"
VALUE_SETS = {
    "default": [],
    **{p.stem: ["-f", str(p)] for p in sorted((CHART / "ci").glob("*.yaml"))},
}


def k8s_version() -> str:
    return versions()["KUBERNETES_VERSION"].lstrip("v")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [require_tool("helm"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def render_text(*args: str) -> str:
    return helm("template", "rel", str(CHART), "--kube-version", k8s_version(), *args).stdout


def render(*args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_text(*args)) if d]


def one(docs: list[dict[str, Any]], kind: str, name_end: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_end)]
    assert len(found) == 1, f"{kind} *{name_end}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return c


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.fixture(scope="module")
def schemas() -> SchemaStore:
    v = versions()
    crds = [
        *sorted(module_data("keda", "KEDA_VERSION", "config/crd/bases").glob("*.yaml")),
        *sorted(
            module_data(
                "prometheus-operator",
                "PROMETHEUS_OPERATOR_VERSION",
                "example/prometheus-operator-crd",
            ).glob("*.yaml")
        ),
    ]
    swagger = module_data("kubernetes", "KUBERNETES_VERSION", "api/openapi-spec/swagger.json")
    key = f"{v['KUBERNETES_VERSION']}-{v['KEDA_VERSION']}-{v['PROMETHEUS_OPERATOR_VERSION']}"
    return SchemaStore(TOOLS / "schemas" / key, v["KUBERNETES_VERSION"], swagger, crds)


def kubeconform(schemas: SchemaStore, text: str) -> subprocess.CompletedProcess[str]:
    schemas.prepare(d for d in yaml.safe_load_all(text) if d)
    args = [
        require_tool("kubeconform"),
        "-strict",
        "-summary",
        "-kubernetes-version",
        k8s_version(),
    ]
    for location in schemas.locations():
        args += ["-schema-location", location]
    return subprocess.run([*args, "-"], input=text, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_chart_lints_clean(values: str) -> None:
    proc = helm("lint", "--strict", str(CHART), *VALUE_SETS[values])
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_rendered_manifests_follow_kubernetes_and_keda_schemas(
    values: str, schemas: SchemaStore
) -> None:
    text = render_text(*VALUE_SETS[values])
    proc = kubeconform(schemas, text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = len([d for d in yaml.safe_load_all(text) if d])
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in proc.stdout


def test_kubeconform_rejects_what_the_cluster_would(schemas: SchemaStore) -> None:
    docs = render()
    one(docs, "Deployment", "-stream")["spec"]["replicaz"] = 2  # a typo
    one(docs, "ScaledObject", "-embed")["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5
    proc = kubeconform(schemas, yaml.safe_dump_all(docs))
    assert proc.returncode != 0
    assert "replicaz" in proc.stdout
    assert "Invalid: 2" in proc.stdout
    unknown = "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"
    proc = kubeconform(schemas, unknown)
    assert proc.returncode != 0 and "could not find schema" in proc.stdout


def test_each_consumer_group_scales_on_its_own_topic_by_the_measured_rate() -> None:
    docs = render(
        "--set", "stream.autoscaling.ratePerReplica=1000",
        "--set", "stream.autoscaling.catchUpSeconds=12",
        "--set", "embed.variant=cpu",
        "--set", "embed.variants.cpu.jobsPerSecondPerReplica=100",
        "--set", "embed.autoscaling.catchUpSeconds=45",
    )  # fmt: skip
    stream = one(docs, "ScaledObject", "-stream")["spec"]
    embed = one(docs, "ScaledObject", "-embed")["spec"]
    for spec, group, topic, threshold in (
        (stream, "interest-stream-worker", "interest.events", "12000"),
        (embed, "interest-embed", "interest.updates", "4500"),
    ):
        trigger = spec["triggers"][0]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["topic"] == topic
        assert trigger["metadata"]["lagThreshold"] == threshold
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 60
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert spec["maxReplicaCount"] <= 12  # kafka.partitions
    # The defaults: 2130 events/s x 30 s and 270 jobs/s x 30 s (values.yaml, deploy/README.md).
    docs = render()
    assert one(docs, "ScaledObject", "-stream")["spec"]["triggers"][0]["metadata"][
        "lagThreshold"
    ] == str(2130 * 30)
    assert one(docs, "ScaledObject", "-embed")["spec"]["triggers"][0]["metadata"][
        "lagThreshold"
    ] == str(270 * 30)
    # With KEDA on, the Deployments leave the replica count to the HPA.
    assert "replicas" not in one(docs, "Deployment", "-stream")["spec"]


def test_more_replicas_than_partitions_is_refused() -> None:
    proc = helm("template", "rel", str(CHART), "--set", "kafka.partitions=4", check=False)
    assert proc.returncode != 0
    assert "maxReplicaCount 12 exceeds kafka.partitions 4" in proc.stderr
    docs = render("--set", "kafka.partitions=24", "--set", "stream.autoscaling.maxReplicaCount=24")
    assert one(docs, "ScaledObject", "-stream")["spec"]["maxReplicaCount"] == 24


def test_embed_workers_on_gpu_nodes_or_the_cpu() -> None:
    gpu = one(render(), "Deployment", "-embed")
    pod = gpu["spec"]["template"]["spec"]
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert env(container(gpu))["INTEREST_MODEL_DEVICE"] == "cuda"
    assert container(gpu)["image"].startswith("interest-stream/embed-gpu:")
    cpu = one(render("--set", "embed.variant=cpu"), "Deployment", "-embed")
    assert "nvidia.com/gpu" not in str(cpu)
    assert env(container(cpu))["INTEREST_MODEL_DEVICE"] == "cpu"
    assert container(cpu)["image"] == "interest-stream/embed:0.1.0"
    proc = helm("template", "rel", str(CHART), "--set", "embed.variant=tpu", check=False)
    assert proc.returncode != 0 and "embed.variant must be one of cpu, gpu" in proc.stderr


def test_probes_budgets_and_a_locked_down_pod() -> None:
    docs = render()
    for kind, port in (("stream", "metrics"), ("embed", "http")):
        deployment = one(docs, "Deployment", f"-{kind}")
        c = container(deployment)
        assert c["args"] == [kind]
        for probe in ("startupProbe", "readinessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": port}
        # Not /healthz: a rebalance (503 until partitions are back) must not restart pods.
        assert c["livenessProbe"]["tcpSocket"] == {"port": port}
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        pdb = one(docs, "PodDisruptionBudget", f"-{kind}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1
    api = one(docs, "Service", "-api")
    embed_labels = one(docs, "Deployment", "-embed")["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"].items() <= embed_labels.items()


def test_secrets_are_referenced_never_written() -> None:
    docs = render("-f", str(CHART / "ci" / "secure-values.yaml"))
    assert [d for d in docs if d["kind"] == "Secret"] == []
    for kind in ("stream", "embed"):
        deployment = one(docs, "Deployment", f"-{kind}")
        e = env(container(deployment))
        assert e["INTEREST_KAFKA_SASL_USERNAME"]["secretKeyRef"]["name"] == "interest-kafka-user"
        # The password and the CA are files from the Secrets, never environment values; the CA
        # is Kafka's only (no process-wide SSL_CERT_FILE that would change Qdrant's trust).
        assert "INTEREST_KAFKA_SASL_PASSWORD" not in e and "SSL_CERT_FILE" not in e
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v["secret"] for v in pod_volumes(deployment) if "secret" in v}
        assert e["INTEREST_KAFKA_SSL_CAFILE"] == f"{mounts['kafka-tls']}/ca.crt"
        assert e["INTEREST_KAFKA_SASL_PASSWORD_FILE"] == f"{mounts['kafka-credentials']}/password"
        assert volumes["kafka-tls"]["secretName"] == "interest-kafka-ca"
        assert volumes["kafka-credentials"]["secretName"] == "interest-kafka-user"
        assert "INTEREST_KAFKA_SSL_CERTFILE" not in e  # mutual TLS only when asked for
        assert e["INTEREST_QDRANT_API_KEY_FILE"] == f"{mounts['qdrant-key']}/api-key"
        assert e["INTEREST_QDRANT_CA_FILE"] == f"{mounts['qdrant-tls']}/ca.crt"
        assert volumes["qdrant-key"]["secretName"] == "interest-qdrant"
        assert volumes["qdrant-tls"]["secretName"] == "interest-qdrant-ca"
        assert "INTEREST_QDRANT_API_KEY" not in e
    embed_env = env(container(one(docs, "Deployment", "-embed")))
    assert embed_env["INTEREST_API_TOKEN"]["secretKeyRef"]["name"] == "interest-api"
    auth = one(docs, "TriggerAuthentication")
    refs = {r["parameter"]: r["name"] for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": "interest-kafka-user",
        "password": "interest-kafka-user",
        "ca": "interest-kafka-ca",
    }
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        metadata = so["spec"]["triggers"][0]["metadata"]
        assert (metadata["sasl"], metadata["tls"]) == ("scram_sha512", "enable")
    config = one(docs, "ConfigMap", "-env")["data"]
    assert config["INTEREST_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "password" not in str(config).lower()


def pod_volumes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["volumes"]
    return volumes


def test_mutual_tls_presents_the_client_certificate_from_the_secret() -> None:
    docs = render(
        "-f", str(CHART / "ci" / "secure-values.yaml"),
        "--set", "kafka.tls.certKey=tls.crt", "--set", "kafka.tls.keyKey=tls.key",
    )  # fmt: skip
    e = env(container(one(docs, "Deployment", "-stream")))
    assert e["INTEREST_KAFKA_SSL_CERTFILE"] == "/etc/interest-stream/kafka-tls/tls.crt"
    assert e["INTEREST_KAFKA_SSL_KEYFILE"] == "/etc/interest-stream/kafka-tls/tls.key"


def test_scraped_under_the_job_names_of_the_alert_rules() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    docs = render("-f", str(CHART / "ci" / "secure-values.yaml"))
    for kind in ("stream", "embed"):
        deployment = one(docs, "Deployment", f"-{kind}")
        template = deployment["spec"]["template"]
        port = container(deployment)["ports"][0]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(
            port["containerPort"]
        )
        monitor = one(docs, "PodMonitor", f"-{kind}")
        job = template["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        assert job in jobs
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == port["name"]
    rule = one(docs, "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    dashboard = one(docs, "ConfigMap", "-dashboard")["data"]["interest-stream.json"]
    assert dashboard == (DEPLOY / "grafana" / "interest-stream.json").read_text().rstrip("\n")


def test_every_interest_variable_is_a_real_setting() -> None:
    from settings_names import unknown_settings

    names: set[str] = set()
    for values in VALUE_SETS.values():
        docs = render(*values)
        names |= set(one(docs, "ConfigMap", "-env")["data"])
        for d in (d for d in docs if d["kind"] == "Deployment"):
            names |= set(env(container(d)))
    assert unknown_settings(names) == []


def _chart_files() -> list[Path]:
    return sorted(p for p in CHART.rglob("*") if p.is_file())


def test_linked_files_are_the_deploy_originals() -> None:
    files = {p.name: p for p in _chart_files()}
    assert files["alerts.yml"].resolve() == (DEPLOY / "prometheus" / "alerts.yml").resolve()
    assert (
        files["interest-stream.json"].resolve()
        == (DEPLOY / "grafana" / "interest-stream.json").resolve()
    )
