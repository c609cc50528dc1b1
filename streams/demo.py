"""``interest-stream demo``: the whole pipeline, end to end, on embedded defaults.

Starts (or reuses) the local broker, runs ``interest-stream run`` (stream + embed workers) as a
child process with the demo's own topics, consumer groups, Qdrant folder and API port, loads the
built-in catalog (:mod:`streams.demo_catalog`) through the worker's API, publishes the scripted
personas' events in two phases, and after each phase prints every persona's profile and top
recommendations — so the taste shift is visible. Then it stops the workers gracefully and cleans
up, and stops the broker if it started it (``--keep`` leaves topics, data and that broker for
inspection). Every stage is timed; any failure exits non-zero with a one-line reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import click

from models.config import CoreSettings
from models.user_view import format_user
from streams.broker import LocalBroker
from streams.demo_catalog import PERSONAS, DemoItem, build_catalog, scripted_events
from streams.embed.api import ApiClient, ApiUnavailable
from streams.publish import EventPublisher
from streams.settings import ApiSettings, BrokerSettings, KafkaSettings, TopicSettings

T = TypeVar("T")


class DemoFailed(RuntimeError):
    """A demo stage did not complete; the message says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Demo:
    """One demo run with its own topics, groups, store and API port."""

    def __init__(self, *, fast: bool, keep: bool = False, echo: Callable[[str], None] = print):
        self.fast = fast
        self.keep = keep
        self.echo = echo
        self.run_id = uuid.uuid4().hex[:8]
        self.core = CoreSettings()
        self.dir = self.core.path("demo", self.run_id)
        self.kafka = KafkaSettings()
        self.topics = TopicSettings(
            events=f"interest-demo-{self.run_id}.events",
            dlq=f"interest-demo-{self.run_id}.events.dlq",
            updates=f"interest-demo-{self.run_id}.updates",
            partitions=2,
        )
        self.api = ApiSettings(port=free_port())
        self.client = ApiClient(self.api)
        self.catalog = build_catalog(formats=2 if fast else 5)
        self.items = {item.item_id: item for item in self.catalog}
        self.started = time.monotonic()
        self.worker: subprocess.Popen[bytes] | None = None
        #: The broker this run started itself (None: it used one already running), stopped at the
        #: end unless ``keep`` -- the demo leaves nothing running that it started.
        self.own_broker: LocalBroker | None = None

    def stage(self, text: str) -> None:
        self.echo(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._broker()
            self._start_workers()
            self._load_catalog()
            now_ms = int(time.time() * 1000)
            per_topic = 4 if self.fast else 8
            totals: Counter[str] = Counter()
            for phase in ("before", "after"):
                events = scripted_events(self.catalog, phase, now_ms, per_topic=per_topic)
                totals.update(str(e["user_id"]) for e in events)
                self.stage(f"publishing {len(events)} events ({phase} the shift)")
                self._publish(events)
                self._wait_folded(totals)
                self._show(phase)
            self._stop_workers()
            self.stage("done: workers stopped cleanly")
        finally:
            self._cleanup()

    def _broker(self) -> None:
        if _reachable(self.kafka.bootstrap):
            self.stage(f"using the Kafka broker at {self.kafka.bootstrap}")
            return
        self.stage("starting the local Kafka broker (first time: Maven fetches the jars)")
        self.own_broker = LocalBroker(BrokerSettings(), self.core)
        status = self.own_broker.start()
        if status.bootstrap != self.kafka.bootstrap.split(",")[0]:
            raise DemoFailed(
                f"the local broker listens on {status.bootstrap} but INTEREST_KAFKA_BOOTSTRAP is "
                f"{self.kafka.bootstrap}; make them agree"
            )

    def _start_workers(self) -> None:
        env = {
            **os.environ,
            "INTEREST_TOPICS_EVENTS": self.topics.events,
            "INTEREST_TOPICS_DLQ": self.topics.dlq,
            "INTEREST_TOPICS_UPDATES": self.topics.updates,
            "INTEREST_TOPICS_POPULARITY": f"interest-demo-{self.run_id}.items.popularity",
            "INTEREST_TOPICS_PARTITIONS": str(self.topics.partitions),
            "INTEREST_STREAM_APP_ID": f"interest-demo-{self.run_id}",
            "INTEREST_STREAM_REPARTITION_TOPIC": f"interest-demo-{self.run_id}.repartition",
            "INTEREST_STREAM_DATA_DIR": str(self.dir / "stream"),
            "INTEREST_STREAM_METRICS_PORT": "0",  # never clash with a running service
            "INTEREST_EMBED_GROUP_ID": f"interest-demo-{self.run_id}-embed",
            "INTEREST_QDRANT_PATH": str(self.dir / "qdrant"),
            "INTEREST_QDRANT_URL": "",
            "INTEREST_API_PORT": str(self.api.port),
            "INTEREST_API_HOST": self.api.host,
        }
        self.stage("starting stream and embed workers (interest-stream run)")
        self.dir.mkdir(parents=True, exist_ok=True)
        log = (self.dir / "workers.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "run"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.worker_log = self.dir / "workers.log"

        def ready() -> bool:
            self._check_worker()
            try:
                return bool(self.client.health().get("consuming"))
            except ApiUnavailable:
                return False

        self._wait(ready, 240, "the workers to start (model loading takes a few seconds)")
        self.stage(f"workers up; API at {self.api.url}")

    def _load_catalog(self) -> None:
        body = "\n".join(json.dumps(i.catalog_line()) for i in self.catalog).encode()
        self.stage(f"loading {len(self.catalog)} catalog items (8 topics) through the API")
        loaded = self.client.load_items(body)
        if loaded != len(self.catalog):
            raise DemoFailed(f"loaded {loaded} of {len(self.catalog)} catalog items")

    def _publish(self, events: list[dict[str, Any]]) -> None:
        async def go() -> None:
            async with EventPublisher(self.kafka, self.topics) as pub:
                for event in events:
                    await pub.publish(event)
                await pub.producer.flush()

        asyncio.run(go())

    def _wait_folded(self, totals: Counter[str]) -> None:
        def folded() -> bool:
            self._check_worker()
            return all(
                (self.client.profile(user).get("seq") or 0) >= count
                for user, count in totals.items()
            )

        start = time.monotonic()
        self._wait(folded, 180, "the events to reach Qdrant")
        self.stage(
            f"all events folded into vectors ({time.monotonic() - start:.1f}s after publish)"
        )

    def _show(self, phase: str) -> None:
        self.echo("")
        self.echo(f"=== {phase} the shift ===")
        for persona in PERSONAS:
            view = self.client.profile(persona.user_id)
            self.echo(format_user(view))
            recs = self.client.recommend(persona.user_id, [("limit", "5")])
            topics = Counter(self._topic(i["item_id"]) for i in recs["items"])
            self.echo(f"top 5 recommendations ({recs['strategy']}):")
            for item in recs["items"]:
                self.echo(f"   {item['score']:+.3f}  {item['payload'].get('text', '')}")
            mix = ", ".join(f"{t} ×{n}" for t, n in topics.most_common())
            self.echo(f"   topics: {mix}")
            short = self.client.recommend(
                persona.user_id, [("limit", "5"), ("dimension", "short_term")]
            )
            short_mix = Counter(self._topic(i["item_id"]) for i in short["items"]).most_common(2)
            self.echo(f"   right now (short_term only): {', '.join(t for t, _ in short_mix)}")
            self.echo("")

    def _topic(self, item_id: str) -> str:
        item: DemoItem | None = self.items.get(item_id)
        return item.topic if item else "?"

    def _stop_workers(self) -> None:
        assert self.worker is not None
        self.stage("stopping the workers (SIGTERM: finish the batch, commit, close)")
        self.worker.send_signal(signal.SIGTERM)
        try:
            code = self.worker.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            raise DemoFailed("the workers did not stop within 90 s of SIGTERM") from None
        self.worker = None
        if code != 0:
            raise DemoFailed(f"the workers exited with status {code}; see {self.worker_log}")

    def _cleanup(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()  # the supervisor stops both workers gracefully
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.worker.kill()  # its workers get SIGTERM from the kernel (PDEATHSIG)
                self.worker.wait()
        if not self.keep:
            asyncio.run(_delete_topics(self.kafka, self.topics, self.run_id))
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.own_broker is not None:
            if self.keep:
                self.stage(
                    "the Kafka broker keeps running (--keep); stop it with "
                    "`interest-stream broker stop`"
                )
            else:
                self.own_broker.stop()
                self.stage("stopped the Kafka broker this demo started")

    # -- helpers ----------------------------------------------------------------------------

    def _check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            tail = self.worker_log.read_text(errors="replace").splitlines()[-15:]
            raise DemoFailed(
                f"the workers exited with status {self.worker.returncode}:\n" + "\n".join(tail)
            )

    def _wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.5)
        raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


async def _delete_topics(kafka: KafkaSettings, topics: TopicSettings, run_id: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    try:
        await admin.start()
        names = [t for t in await admin.list_topics() if run_id in t]
        if names:
            await admin.delete_topics(names)
    except Exception as exc:  # cleanup is best effort: the demo's result stands
        click.echo(f"note: could not delete the demo topics ({exc})", err=True)
    finally:
        await admin.close()
