"""One run's pipeline: fresh topics, both workers, the sampler, the warm-up and the load."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from bench.overload.load import Publisher, run_load
from bench.overload.procs import Worker
from bench.overload.sampler import Sampler
from bench.processes import free_port, worker_env
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import ensure_topics


class Pipeline:
    """Fresh topics, both workers, the sampler, and what the bench does with them."""

    def __init__(self, kafka: KafkaSettings, args: argparse.Namespace, work: Path) -> None:
        self.kafka, self.args, self.work = kafka, args, work
        prefix = f"bench{uuid.uuid4().hex[:6]}-overload"
        self.topics = TopicSettings(
            events=f"{prefix}.events",
            dlq=f"{prefix}.events.dlq",
            updates=f"{prefix}.updates",
            popularity=f"{prefix}.items.popularity",
            partitions=args.partitions,
        )
        asyncio.run(ensure_topics(kafka, self.topics))
        self.groups = {"stream": f"{prefix}-stream", "embed": f"{prefix}-embed"}
        self.workers: dict[str, Worker] = {}
        self.sampler: Sampler | None = None

    def start(self) -> dict[str, float]:
        """Start the embed worker, then the stream worker, the sampler and the warm-up;
        returns the seconds each took. The groups are the ones the workers report."""
        kafka, topics, work = self.kafka, self.topics, self.work
        port = free_port()
        env = worker_env(
            kafka,
            topics,
            INTEREST_EMBED_GROUP_ID=self.groups["embed"],
            INTEREST_QDRANT_PATH=str(work / "qdrant"),
            INTEREST_API_PORT=str(port),
        )
        self.workers["embed"] = Worker("embed", env, port, work)
        print("embed worker: loading the model, opening the store ...", flush=True)
        ready = {"embed_ready_s": self.workers["embed"].wait_ready(300)}
        port = free_port()
        env = worker_env(
            kafka,
            topics,
            INTEREST_STREAM_APP_ID=self.groups["stream"],
            INTEREST_STREAM_REPARTITION_TOPIC=f"{topics.events}.repartition",
            INTEREST_STREAM_DATA_DIR=str(work / "stream"),
            INTEREST_STREAM_METRICS_PORT=str(port),
        )
        if self.args.rocksdb_write_buffer_mb:
            env["INTEREST_STREAM_ROCKSDB_WRITE_BUFFER_MB"] = str(self.args.rocksdb_write_buffer_mb)
        self.workers["stream"] = Worker("stream", env, port, work)
        ready["stream_ready_s"] = self.workers["stream"].wait_ready(300)
        for kind, worker in self.workers.items():  # the group each worker says it is in
            self.groups[kind] = json.loads(worker.get("/healthz")).get("group", self.groups[kind])
        self.sampler = Sampler(kafka, self.groups, self.workers)
        self.sampler.start()
        print("both workers up; warm-up ...", flush=True)
        ready["warmup_s"] = self.warm_up()
        return ready

    def warm_up(self) -> float:
        """400 events to 50 users, then wait until both groups have no lag."""
        assert self.sampler is not None
        t0 = time.time()

        async def send() -> None:
            pub = Publisher(self.kafka, self.topics.events, 50)
            await pub.start()
            for k in range(400):
                await pub.send(f"warm-{k % 50}", f"w{k}")
            await pub.stop()

        asyncio.run(send())
        while time.time() - t0 < 300:
            time.sleep(1.0)
            self.check()
            last = self.sampler.samples[-1]["lag"] if self.sampler.samples else {}
            if all(last.get(k, {}).get("lag_sum", 1) == 0 for k in ("stream", "embed")):
                return time.time() - t0
        raise SystemExit("warm-up: the groups did not catch up in 300 s")

    def check(self) -> None:
        """Fail the run if a worker exited or the sampler failed."""
        for w in self.workers.values():
            w.check_alive()
        if self.sampler is not None and self.sampler.failed is not None:
            raise self.sampler.failed

    def load(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Runs the phases; returns them and the drained thresholds (records) used."""
        assert self.sampler is not None
        pub = Publisher(self.kafka, self.topics.events, self.args.users)
        print("steady, burst, recover ...", flush=True)
        phases = asyncio.run(run_load(pub, self.sampler, self.args, self.check))
        time.sleep(2.0)
        return phases, dict(self.sampler.thresholds)

    def stop(self) -> dict[str, int | None]:
        """Stop the sampler and both workers (SIGTERM); returns the workers' exit codes."""
        if self.sampler is not None:
            self.sampler.done.set()
            self.sampler.join(timeout=30)
            self.sampler.pool.shutdown(wait=False)
        return {k: self.workers[k].stop() for k in ("stream", "embed") if k in self.workers}
