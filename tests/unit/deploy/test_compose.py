"""The one-host stack (deploy/compose), offline: the files against the Compose specification's
JSON schema (compose-go's), after interpolating variables as Compose does, and the stack's parts
fitting together -- every mounted file there, the workers' images built from real targets, the
Prometheus config of the stack through promtool, Grafana provisioned with the dashboard."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_tools import DEPLOY, ROOT, module_data, require_tool

COMPOSE = DEPLOY / "compose"
FILES = ["compose.yaml", "compose.gpu.yaml"]
_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``$VAR``, and ``$$`` for a literal ``$``.

    >>> interpolate({"a": "${X:-1}", "b": ["$$Y", "${Z-2}/$W"]}, {"W": "w"})
    {'a': '1', 'b': ['$Y', '2/w']}
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3) or ""
        current = env.get(name)
        if op in (":-", "-") and (current is None or (op == ":-" and not current)):
            return arg
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise ValueError(f"${{{name}}}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = interpolate(yaml.safe_load((COMPOSE / name).read_text()), {})
    return data


def validator() -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load(
        module_data("compose-go", "COMPOSE_GO_VERSION", "schema/compose-spec.json").read_text()
    )
    return jsonschema.Draft202012Validator(schema)


def errors(data: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(data)
    )


@pytest.mark.parametrize("name", FILES)
def test_follows_the_compose_specification(name: str) -> None:
    assert errors(load(name)) == []


def test_the_schema_check_catches_mistakes() -> None:
    data = load("compose.yaml")
    data["services"]["stream"]["restart_policy"] = "always"  # a Swarm key in the wrong place
    data["services"]["kafka"]["ports"] = "9092:9092"  # a string, not a list
    found = errors(data)
    assert any(e.startswith("services/stream") and "restart_policy" in e for e in found)
    assert any(e.startswith("services/kafka/ports") for e in found)


def test_the_whole_stack_is_there_pinned() -> None:
    services = load("compose.yaml")["services"]
    assert set(services) == {"kafka", "qdrant", "stream", "embed", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_workers_build_real_targets_and_reach_the_stack() -> None:
    for name in FILES:
        for service, spec in load(name)["services"].items():
            build = spec.get("build")
            if not build:
                continue
            context = (COMPOSE / build["context"]).resolve()
            assert context == ROOT, service
            dockerfile = context / build["dockerfile"]
            targets = set(
                re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.M | re.I)
            )
            assert build["target"] == service and service in targets
    services = load("compose.yaml")["services"]
    for worker in ("stream", "embed"):
        env = services[worker]["environment"]
        host, port = env["INTEREST_KAFKA_BOOTSTRAP"].split(":")
        listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"//{host}:{port}" in listeners
        assert env["INTEREST_QDRANT_URL"].startswith("http://qdrant:6333")
        assert set(services[worker]["depends_on"]) == {"kafka", "qdrant"}


def test_every_interest_variable_is_a_real_setting() -> None:
    from settings_names import unknown_settings

    names = {
        n for f in FILES for s in load(f)["services"].values() for n in s.get("environment", {})
    }
    assert unknown_settings(names) == []


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path -> the file here."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (COMPOSE / source).resolve()
    return out


def test_mounted_files_exist() -> None:
    for service in load("compose.yaml")["services"].values():
        for target, source in _mounts(service).items():
            assert source.is_file(), f"{source} (mounted at {target})"


def test_prometheus_of_the_stack_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    services = load("compose.yaml")["services"]
    mounts = _mounts(services["prometheus"])
    for target, source in mounts.items():
        here = tmp_path / target.lstrip("/")
        here.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, here)
    config = tmp_path / "etc/prometheus/prometheus.yml"
    proc = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rule files found" in proc.stdout
    # The same job names as deploy/prometheus (the alert rules and dashboard use them), each
    # pointing at a worker service on the port it serves /metrics on.
    jobs = {j["job_name"]: j for j in yaml.safe_load(config.read_text())["scrape_configs"]}
    reference = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert set(jobs) == {j["job_name"] for j in reference["scrape_configs"]}
    ports = {"stream": "INTEREST_STREAM_METRICS_PORT", "embed": "INTEREST_API_PORT"}
    for job in jobs.values():
        (sd,) = job["dns_sd_configs"]
        (service,) = sd["names"]
        assert str(sd["port"]) == services[service]["environment"][ports[service]]


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    services = load("compose.yaml")["services"]
    mounts = _mounts(services["grafana"])
    dashboard = next(t for t, s in mounts.items() if s.name == "interest-stream.json")
    providers = next(s for t, s in mounts.items() if "provisioning/dashboards" in t)
    datasources = next(s for t, s in mounts.items() if "provisioning/datasources" in t)
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    assert Path(dashboard).parent == Path(provider["options"]["path"])
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in services
