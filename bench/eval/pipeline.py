"""``--pipeline``: the training events through the real service, then the same scoring from Qdrant.

1. Items (vectors from the cache, training-only popularity) are written into a fresh embedded
   Qdrant folder, which is then released for the embed worker.
2. A stream worker (``python -m streams.cli stream``) and an embed worker (``python -m streams.cli
   embed``) start as child processes with their own topics, consumer groups, faust data dir and
   Qdrant folder — the same environment overrides ``interest-stream demo`` uses — and the
   evaluated parameters as the settings a deployment would set (``INTEREST_PROFILE_*`` for the
   interest math, ``INTEREST_RECOMMEND_*``; :meth:`~bench.eval.config.EvalParams.env`).
3. Every profile event is published through :class:`~streams.publish.EventPublisher` in global
   time order (ties in file order). The publisher keys by user, so one user's events share a
   partition and keep publish order, including events with identical timestamps; the stream worker
   numbers them in that order, as the fast mode does.
4. Done when both groups' lag is zero (:class:`~streams.lag.LagReader`) and every user's stored
   ``seq`` (read through the embed worker's HTTP API) equals the user's event count. Then both
   workers get SIGTERM (finish, commit, close) and every user's ``events_folded`` is checked
   against the count too, so no event was folded away (content dropped) by the stream state.

The stream workers' pending bound is raised for the run (``INTEREST_STREAM_PENDING_CAP``):
MovieLens users rate hundreds of movies within minutes, so a burst can exceed the default 512
pending events while the per-user flush gate is closed, and the stream state would then drop the
oldest events' content (counting them) — correct for a live service, wrong for an evaluation that
must see every event.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.eval.config import EvalParams
from bench.eval.world import load_items, open_folder, open_store, read_users
from bench.movielens import MovieLens, UserSplit, popularity, profile_events
from streams.embed.api import ApiClient, ApiUnavailable
from streams.lag import LagReader
from streams.publish import EventPublisher
from streams.settings import ApiSettings, KafkaSettings, TopicSettings


class PipelineFailed(RuntimeError):
    """A stage of the pipeline run did not complete; the message says which and why."""


@dataclass
class PipelineReport:
    events: int = 0
    users: int = 0
    embed_command: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "users": self.users,
            "embed_command": " ".join(self.embed_command),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Pipeline:
    """One run with its own topics, groups, folders and API port under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        kafka: KafkaSettings,
        params: EvalParams,
        *,
        partitions: int = 3,
        timeout_s: float = 600.0,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.workdir = workdir
        self.kafka = kafka
        self.params = params
        self.timeout_s = timeout_s
        self.echo = echo
        self.run_id = uuid.uuid4().hex[:8]
        prefix = f"ml-eval-{self.run_id}"
        self.topics = TopicSettings(
            events=f"{prefix}.events",
            dlq=f"{prefix}.events.dlq",
            updates=f"{prefix}.updates",
            partitions=partitions,
        )
        self.stream_group = prefix
        self.embed_group = f"{prefix}-embed"
        self.api = ApiSettings(port=_free_port(), host="127.0.0.1")
        self.qdrant_path = workdir / "qdrant"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = time.monotonic()

    def stage(self, text: str) -> None:
        self.echo(f"[pipeline {time.monotonic() - self.started:6.1f}s] {text}")

    # -- the run ----------------------------------------------------------------------------------
    def run(
        self, data: MovieLens, splits: Sequence[UserSplit], vectors: npt.NDArray[np.float32]
    ) -> PipelineReport:
        report = PipelineReport(users=len(splits))
        spec = self.params.spec()
        store = open_store(self.qdrant_path, int(vectors.shape[1]), spec, self.params.collab_spec())
        try:
            load_items(store, data, vectors, popularity(splits))
        finally:
            store.close()
        events = profile_events(data, splits)
        report.events = len(events)
        expected = {s.user_id: len(s.profile) for s in splits}
        try:
            report.embed_command = self._start_workers()
            t0 = time.monotonic()
            self.stage(f"publishing {len(events)} events of {len(splits)} users in time order")
            asyncio.run(self._publish(events))
            report.seconds["publish"] = time.monotonic() - t0
            self._wait_folded(expected)
            report.seconds["publish_to_folded"] = time.monotonic() - t0
            self._stop_workers()
        finally:
            self._cleanup()
        self._check_store(expected, int(vectors.shape[1]))
        report.seconds["total"] = time.monotonic() - self.started
        return report

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "INTEREST_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "INTEREST_TOPICS_EVENTS": self.topics.events,
            "INTEREST_TOPICS_DLQ": self.topics.dlq,
            "INTEREST_TOPICS_UPDATES": self.topics.updates,
            "INTEREST_TOPICS_PARTITIONS": str(self.topics.partitions),
            "INTEREST_STREAM_APP_ID": self.stream_group,
            "INTEREST_STREAM_REPARTITION_TOPIC": f"{self.stream_group}.repartition",
            "INTEREST_STREAM_DATA_DIR": str(self.workdir / "stream"),
            "INTEREST_STREAM_PENDING_CAP": "4096",
            "INTEREST_STREAM_PENDING_MAX_BYTES": str(768 * 1024),
            # Popularity is the training-only count the harness wrote into the items: the live
            # one (decayed counts kept by the stream workers) stays off, or fast and pipeline
            # modes would score with different priors. Its topic is per run all the same.
            "INTEREST_STREAM_POPULARITY_ENABLED": "false",
            "INTEREST_EMBED_APPLY_POPULARITY": "false",
            "INTEREST_TOPICS_POPULARITY": f"{self.stream_group}.popularity",
            "INTEREST_STREAM_METRICS_PORT": "0",
            "INTEREST_EMBED_GROUP_ID": self.embed_group,
            "INTEREST_QDRANT_PATH": str(self.qdrant_path),
            "INTEREST_QDRANT_URL": "",
            "INTEREST_API_ENABLED": "true",
            "INTEREST_API_HOST": self.api.host,
            "INTEREST_API_PORT": str(self.api.port),
            **self.params.env(),
        }

    def _start_workers(self) -> list[str]:
        env = self._env()
        stream_cmd = [sys.executable, "-m", "streams.cli", "stream"]
        embed_cmd = [sys.executable, "-m", "streams.cli", "embed"]
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, cmd in (("stream", stream_cmd), ("embed", embed_cmd)):
            log = (self.workdir / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.stage(f"started stream and embed workers ({' '.join(embed_cmd[1:])})")
        client = ApiClient(self.api)

        def ready() -> bool:
            try:
                return bool(client.health().get("consuming"))
            except ApiUnavailable:
                return False

        self._wait(ready, 240, "the embed worker to start")
        self.stage("workers up")
        return [Path(embed_cmd[0]).name, *embed_cmd[1:]]

    async def _publish(self, events: Sequence[dict[str, Any]]) -> None:
        async with EventPublisher(self.kafka, self.topics) as pub:
            for event in events:
                await pub.publish(event)
            await pub.producer.flush()
            if pub.report.sent != len(events):
                raise PipelineFailed(f"sent {pub.report.sent} of {len(events)} events")

    def _wait_folded(self, expected: dict[str, int]) -> None:
        client = ApiClient(self.api)
        waiting = dict(expected)

        def folded() -> bool:
            for user, count in list(waiting.items()):
                seq = client.profile(user).get("seq") or 0
                if seq > count:
                    raise PipelineFailed(f"user {user}: seq {seq} > {count} events published")
                if seq == count:
                    del waiting[user]
                else:
                    return False  # users fold in roughly time order; ask again later
            return not waiting and self._lag_zero()

        self._wait(folded, self.timeout_s, f"{len(expected)} users' events to reach Qdrant")
        self.stage("every user's seq equals its event count and both groups' lag is zero")

    def _lag_zero(self) -> bool:
        async def read() -> bool:
            async with LagReader(self.kafka) as reader:
                samples = await reader.read([self.stream_group, self.embed_group])
            return all(s.totals.lag_sum == 0 for s in samples)

        return asyncio.run(read())

    def _stop_workers(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                code = proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                raise PipelineFailed(f"the {name} worker did not stop within 90 s") from None
            if code != 0:
                raise PipelineFailed(f"the {name} worker exited with {code}: {self._tail(name)}")
            del self.procs[name]
        self.stage("workers stopped cleanly")

    def _check_store(self, expected: dict[str, int], dimension: int) -> None:
        """Every user: ``seq`` and ``events_folded`` equal the published count."""
        store = open_folder(self.qdrant_path, dimension)
        try:
            users = read_users(store, list(expected))
        finally:
            store.close()
        for user, count in expected.items():
            stored = users.get(user)
            got = None if stored is None else (stored.payload.get("seq"),
                                               stored.payload.get("events_folded"))  # fmt: skip
            if got != (count, count):
                raise PipelineFailed(f"user {user}: (seq, events_folded) = {got}, want {count}")

    def _cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs.clear()
        try:
            asyncio.run(self._delete_topics())
        except Exception as exc:  # best effort: the run's result stands
            self.echo(f"note: could not delete the run's topics ({exc})")

    async def _delete_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.kafka.client_kwargs())
        try:
            await admin.start()
            names = [t for t in await admin.list_topics() if self.run_id in t]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    # -- helpers ----------------------------------------------------------------------------------
    def _tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise PipelineFailed(
                    f"the {name} worker exited with {proc.returncode}:\n{self._tail(name)}"
                )

    def _wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if done():
                return
            time.sleep(0.5)
        raise PipelineFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
