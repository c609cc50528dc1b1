"""Consumer lag against the real broker: ``lag --json`` equals Kafka's own consumer-groups tool.

One topic, five partitions, records with known timestamps, and a group whose offsets are fixed
(nothing consumes): p0 committed 4 of 10, p1 7 of 7 (caught up), p2 0 of 5, p3 never committed,
p4 committed 9 of 5 (beyond the log end, as after a topic is recreated). Kafka's tool prints
LAG -4 for p4; we clamp to 0 — the one difference, by design. Also: the Prometheus collector and
the stream worker's metrics server, and the deploy/ files (Prometheus config, alert rules and
their unit tests, Grafana dashboard).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner
from deploy_tools import INSTALL_HINT, find_tool
from prometheus_client import CollectorRegistry, generate_latest

from streams.broker import ensure_jars, require_java
from streams.embed.metrics import EmbedMetrics
from streams.lag import LagCollector
from streams.lag_cli import lag
from streams.settings import BrokerSettings, KafkaSettings
from streams.stream.app import StreamStats
from streams.stream.metrics import MetricsServer, StreamMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RECORDS = {0: 10, 1: 7, 2: 5, 3: 3, 4: 5}  # records per partition
COMMITS = {0: 4, 1: 7, 2: 0, 4: 9}  # p3: no commit
EXPECTED_LAG = {0: 6, 1: 0, 2: 5, 3: None, 4: 0}
NOW_MS = int(time.time() * 1000)


def record_ts(partition: int, offset: int) -> int:
    """Record ``offset`` of ``partition`` is (100 - offset) minutes + partition seconds old."""
    return NOW_MS - (100 - offset) * 60_000 - partition * 1000


Row = tuple[str, str, str]  # CURRENT-OFFSET, LOG-END-OFFSET, LAG as printed


@pytest.fixture(scope="module")
def lagged(kafka: KafkaSettings) -> tuple[str, str]:
    """(topic, group) with the records and committed offsets above; the group has no members."""
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"lag-group-{uuid.uuid4().hex[:8]}"

    async def setup() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, len(RECORDS), 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
        await producer.start()
        try:
            for p, n in RECORDS.items():
                for off in range(n):
                    await producer.send(topic, b"x", partition=p, timestamp_ms=record_ts(p, off))
            await producer.flush()
        finally:
            await producer.stop()
        member = await join(kafka, topic, group)
        try:
            await member.commit({TopicPartition(topic, p): off for p, off in COMMITS.items()})
        finally:
            await member.stop()

    asyncio.run(setup())
    return topic, group


async def join(kafka: KafkaSettings, topic: str, group: str) -> AIOKafkaConsumer:
    """A group member that owns every partition and never commits on its own."""
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await member.start()
    deadline = time.monotonic() + 30
    while len(member.assignment()) < len(RECORDS):
        assert time.monotonic() < deadline, "the member never got its partitions"
        await asyncio.sleep(0.1)
    return member


def kafka_tool(kafka: KafkaSettings, group: str) -> dict[int, Row]:
    """Kafka's ConsumerGroupCommand --describe, parsed: partition -> printed offsets and lag."""
    jars = ensure_jars(BrokerSettings())
    cmd = [require_java(), "-Xmx256m", "-cp", f"{jars}/*",
           "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
           "--bootstrap-server", kafka.bootstrap, "--describe", "--group", group]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows: dict[int, Row] = {}
    header: list[str] | None = None
    for line in out.splitlines():
        cells = line.split()
        if cells[:1] == ["GROUP"]:
            header = cells
        elif header and len(cells) >= 6 and cells[0] == group:
            assert header[:6] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET",
                                  "LOG-END-OFFSET", "LAG"]  # fmt: skip
            rows[int(cells[2])] = (cells[3], cells[4], cells[5])
    return rows


def our_cli(kafka: KafkaSettings, *args: str) -> str:
    """``python -m streams.lag_cli ARGS`` in a subprocess (the real entry point)."""
    env = {**os.environ, "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap}
    proc = subprocess.run(
        [sys.executable, "-m", "streams.lag_cli", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def as_rows(doc: dict[str, Any]) -> dict[int, Row]:
    def dash(v: object) -> str:
        return "-" if v is None else str(v)

    return {
        p["partition"]: (dash(p["current_offset"]), dash(p["log_end_offset"]), dash(p["lag"]))
        for p in doc["partitions"]
    }


def assert_agrees(ours: dict[int, Row], theirs: dict[int, Row]) -> None:
    """Same rows and numbers, except p4: Kafka's tool prints the negative lag we clamp."""
    assert sorted(ours) == sorted(theirs)
    for p in theirs:
        if p == 4:
            assert theirs[p] == ("9", "5", "-4") and ours[p] == ("9", "5", "0")
        else:
            assert ours[p] == theirs[p], f"partition {p}"


def check_lag_seconds(doc: dict[str, Any]) -> None:
    now_ms = time.time() * 1000
    for p in doc["partitions"]:
        n = p["partition"]
        if EXPECTED_LAG[n] is None:
            assert p["lag_seconds"] is None
        elif EXPECTED_LAG[n] == 0:
            assert p["lag_seconds"] == 0.0
        else:  # age of the record at the committed offset
            expected = (now_ms - record_ts(n, COMMITS[n])) / 1000
            assert p["lag_seconds"] == pytest.approx(expected, abs=30)


@pytest.mark.integration
def test_lag_json_matches_kafka_tool_without_members(
    kafka: KafkaSettings, lagged: tuple[str, str]
) -> None:
    topic, group = lagged
    theirs = kafka_tool(kafka, group)
    doc = json.loads(our_cli(kafka, "--json", "--group", group))["groups"][0]
    # Without members both list only the partitions with a committed offset (p3 is absent).
    assert sorted(theirs) == [0, 1, 2, 4]
    assert_agrees(as_rows(doc), theirs)
    assert all(p["topic"] == topic for p in doc["partitions"])
    assert (doc["state"], doc["members"], doc["status"]) == ("Empty", 0, "stopped")
    assert (doc["lag_max"], doc["lag_sum"]) == (6, 11)
    check_lag_seconds(doc)


@pytest.mark.integration
def test_lag_with_a_live_member_matches_kafka_tool_and_serves_metrics(
    kafka: KafkaSettings, lagged: tuple[str, str]
) -> None:
    topic, group = lagged

    async def scenario() -> None:
        member = await join(kafka, topic, group)
        try:
            theirs = await asyncio.to_thread(kafka_tool, kafka, group)
            out = await asyncio.to_thread(our_cli, kafka, "--json", "-g", group)
            doc = json.loads(out)["groups"][0]
            # An assigned partition without a commit: "-" in both, never the log-end offset.
            assert theirs[3] == ("-", "3", "-") and sorted(theirs) == [0, 1, 2, 3, 4]
            assert_agrees(as_rows(doc), theirs)
            assert (doc["members"], doc["status"]) == (1, "lagging")
            check_lag_seconds(doc)
            # A window of two samples: members present, offsets not moving -> stalled.
            watched = await asyncio.to_thread(
                our_cli, kafka, "--json", "-g", group, "--watch", "0.2", "--count", "2"
            )
            statuses = [json.loads(line)["groups"][0]["status"] for line in watched.splitlines()]
            assert statuses == ["lagging", "stalled"]
            await check_metrics_endpoint(kafka, group)
        finally:
            await member.stop()

    asyncio.run(scenario())


async def check_metrics_endpoint(kafka: KafkaSettings, group: str) -> None:
    """The stream worker's metrics server refreshes the collector and serves the lag series."""
    metrics = StreamMetrics(StreamStats())
    collector = LagCollector(kafka, [group], registry=metrics.registry, min_interval_s=0)
    server = MetricsServer(
        "127.0.0.1", 0, metrics.registry,
        health=lambda: {"status": "ok", "consuming": True}, refresh=[collector],
    )  # fmt: skip
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/metrics").read())
        health = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/healthz").read())
    finally:
        await server.stop()
        await collector.close()
    assert json.loads(health)["consuming"] is True
    series = parse_samples(body.decode())
    lag_series = {
        int(labels["partition"]): value
        for name, labels, value in series
        if name == "interest_consumer_lag" and labels["group"] == group
    }
    assert lag_series == {p: float(v) for p, v in EXPECTED_LAG.items() if v is not None}
    seconds = {
        int(labels["partition"])
        for name, labels, _ in series
        if name == "interest_consumer_lag_seconds"
    }
    assert seconds == {0, 1, 2, 4}  # none for p3, which has no commit
    by_name = {(name, labels.get("status")): value for name, labels, value in series}
    assert by_name[("interest_consumer_group_lag_max", None)] == 6
    assert by_name[("interest_consumer_group_lag_sum", None)] == 11
    assert by_name[("interest_consumer_group_lag_seconds_max", None)] > 90 * 60
    assert by_name[("interest_consumer_group_members", None)] == 1
    assert by_name[("interest_consumer_group_status", "lagging")] == 1
    assert by_name[("interest_consumer_group_status", "OK")] == 0
    assert by_name[("interest_consumer_lag_read_ok", None)] == 1
    assert ("interest_stream_records_total", None) in by_name


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_:]+)(?:\{(.*)\})? (\S+)", line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            out.append((match.group(1), labels, float(match.group(3))))
    return out


@pytest.mark.integration
def test_collector_text_and_failed_reads(kafka: KafkaSettings, lagged: tuple[str, str]) -> None:
    _topic, group = lagged
    registry = CollectorRegistry()
    collector = LagCollector(kafka, [group], registry=registry, min_interval_s=0)

    async def read() -> str:
        try:
            await collector.refresh()
            return generate_latest(registry).decode()
        finally:
            await collector.close()

    text = asyncio.run(read())
    for name in ("interest_consumer_lag", "interest_consumer_lag_seconds",
                 "interest_consumer_group_lag_max", "interest_consumer_group_lag_sum",
                 "interest_consumer_group_lag_seconds_max"):  # fmt: skip
        assert f"# TYPE {name} gauge" in text
        assert re.search(rf'^{name}\{{group="{group}"', text, re.M), name
    assert 'partition="3"' not in text  # no commit and no member: not a row at all
    assert f'interest_consumer_group_status{{group="{group}",status="stopped"}} 1.0' in text

    # Brokers away: the lag series go (no stale numbers), read_ok says so, nothing raises.
    dead = LagCollector(
        KafkaSettings(bootstrap="127.0.0.1:1", request_timeout_s=2), [group],
        registry=CollectorRegistry(), min_interval_s=0, timeout_s=3,
    )  # fmt: skip
    asyncio.run(dead.refresh())
    names = {m.name for m in dead.collect() if m.samples}
    assert names == {"interest_consumer_lag_read_ok"}
    assert next(iter(dead.collect())).samples == []


@pytest.mark.integration
def test_cli_text_table_and_click_command(kafka: KafkaSettings, lagged: tuple[str, str]) -> None:
    topic, group = lagged
    result = CliRunner().invoke(lag, ["--group", group])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{group}: stopped (Empty, 0 members)")
    header = lines[2].split()
    assert header == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                      "LAG-SECONDS"]  # fmt: skip
    rows = {int(c[2]): c for c in (line.split() for line in lines[3:])}
    assert rows[0][:6] == [group, topic, "0", "4", "10", "6"]
    assert rows[4][3:7] == ["9", "5", "0", "0.0"]
    missing = CliRunner().invoke(lag, ["--group", "no-such-group", "--json"])
    doc = json.loads(missing.output)["groups"][0]
    assert (doc["state"], doc["status"], doc["partitions"]) == ("Dead", "unknown", [])


def test_cli_unreachable_broker_is_one_line() -> None:
    env = {**os.environ, "INTEREST_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    proc = subprocess.run(
        [sys.executable, "-m", "streams.lag_cli", "-g", "x"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach Kafka at 127.0.0.1:1")
    assert "Traceback" not in proc.stderr


# -- deploy/: Prometheus config, alert rules, Grafana dashboard --------------------------------


def known_metric_names() -> set[str]:
    """Every series name the workers expose (with _total/_bucket/... suffixes)."""
    names: set[str] = set()
    registries = [EmbedMetrics().registry, StreamMetrics(StreamStats()).registry]
    lag_registry = CollectorRegistry()
    LagCollector(KafkaSettings(), ["g"], registry=lag_registry)
    for registry in [*registries, lag_registry]:
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "histogram":
                names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
            if family.type == "counter":
                names.add(family.name + "_total")
    return names | {"up"}


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\binterest_[a-z_]+\b", expr))
    return names | ({"up"} if re.search(r"\bup\{", expr) else set())


def balanced(expr: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "interest-stream.json").read_text())
    exprs = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            exprs.append(target["expr"].replace("$group", ".*"))
    return exprs


def test_alert_rules_and_scrape_config_parse() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"interest-embed", "interest-stream"}
    assert jobs["interest-embed"]["static_configs"][0]["targets"] == ["127.0.0.1:8765"]
    assert config["rule_files"] == ["alerts.yml"]
    rules = alert_rules()
    known = known_metric_names()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert balanced(rule["expr"]), rule["alert"]
        used = metric_names(rule["expr"])
        assert used and used <= known, (rule["alert"], used - known)
    wanted = {"histogram_quantile(0.99", "interest_stream_dlq_total", "interest_worker_consuming",
              "absent(", "up{", "interest_consumer_group_lag"}  # fmt: skip
    text = " ".join(r["expr"] for r in rules)
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]


def test_dashboard_parses_and_every_panel_queries_known_metrics() -> None:
    known = known_metric_names()
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    for expr in exprs:
        assert balanced(expr), expr
        used = metric_names(expr)
        assert used and used <= known, (expr, used - known)
    text = " ".join(exprs)
    needed = [
        "interest_consumer_lag{",
        "interest_consumer_group_lag_max",
        "interest_consumer_lag_seconds",
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
        "interest_stream_dlq_total",
        "interest_embed_texts_embedded_total",
        "interest_qdrant_errors_total",
    ]
    assert [n for n in needed if n not in text] == []


# On PATH, in the venv's bin or in the tools dir (scripts/install.sh unpacks it there).
PROMTOOL = find_tool("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason=f"promtool is not installed: {INSTALL_HINT}")
def test_promtool_checks_rules_config_unit_tests_and_dashboard_queries(tmp_path: Path) -> None:
    prom = DEPLOY / "prometheus"

    def promtool(*args: str, cwd: Path = prom) -> None:
        proc = subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    promtool("check", "config", "prometheus.yml")
    promtool("check", "rules", "alerts.yml")
    promtool("test", "rules", "alerts_test.yml")
    # The rules against the series of a real overload (generated by bench/overload/).
    promtool("test", "rules", "alerts_overload_test.yml")
    # promtool parses PromQL only inside rule files: wrap the dashboard's queries as records.
    records = [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    promtool("check", "rules", str(path), cwd=tmp_path)
