"""What ``interest-stream run`` checks before it starts its workers, and what it tells the user.

Before any worker starts (so before anything joins a consumer group), within a fraction of a
second:

- one ``run`` per embedded store: the supervisor holds an exclusive ``flock`` on
  ``<INTEREST_QDRANT_PATH>/.run.lock`` for its whole life (with its pid and API address inside, so
  a second ``run`` can say who holds it); a store folder already opened by another process (an
  ``interest-stream embed``, a command reading it) is refused too;
- the API port: taken means another service (or program) would make the embed worker fail after
  loading its model, so it is refused now, naming what answers there;
- the stream worker's metrics port: taken only costs the stream worker its ``/metrics``, so that
  is a warning.

Then a banner says where everything is (Kafka, consumer groups, store, model, API), and
:class:`Readiness` polls both workers' ``/healthz`` until they consume, to say "workers up" with
the API address.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.settings import ApiSettings, EmbedSettings, KafkaSettings, TopicSettings

RUN_LOCK = ".run.lock"
STORE_LOCK = ".lock"  # the one the embedded store takes (models.store.edge.LOCK_FILE)
PROBE_TIMEOUT_S = 0.5
PROBE_EVERY_S = 0.5
#: How often a start that takes long says what it is still waiting for.
REMIND_EVERY_S = 30.0


class RunRefused(RuntimeError):
    """``run`` cannot start as configured; the message is one line for the CLI."""


@dataclass(frozen=True)
class RunPlan:
    """Where the workers of one ``run`` will be, from the settings."""

    kafka: KafkaSettings
    topics: TopicSettings
    embed_group: str
    stream_group: str
    api: ApiSettings
    stream_metrics: tuple[str, int] | None  # host, port; None when off or on a random port
    qdrant_url: str | None
    qdrant_path: Path
    model_name: str

    @classmethod
    def from_settings(cls) -> RunPlan:
        from models.settings import ModelSettings, QdrantSettings
        from streams.stream.settings import StreamSettings

        stream = StreamSettings()
        qdrant = QdrantSettings()
        metrics = (
            (stream.metrics_host, stream.metrics_port)
            if stream.metrics_enabled and stream.metrics_port
            else None
        )
        return cls(
            kafka=KafkaSettings(),
            topics=TopicSettings(),
            embed_group=EmbedSettings().group_id,
            stream_group=stream.app_id,
            api=ApiSettings(),
            stream_metrics=metrics,
            qdrant_url=qdrant.url or None,
            qdrant_path=Path(qdrant.path).expanduser(),
            model_name=ModelSettings().name,
        )

    @property
    def api_url(self) -> str | None:
        """The API's address, when it is served on a known port."""
        return self.api.url if self.api.enabled and self.api.port else None

    @property
    def stream_metrics_url(self) -> str | None:
        if self.stream_metrics is None:
            return None
        host, port = self.stream_metrics
        return f"http://{host}:{port}"


class RunLock:
    """The exclusive lock one ``run`` holds on an embedded store folder while it runs."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RUN_LOCK
        self._fd: int | None = None

    def acquire(self, plan: RunPlan) -> None:
        """Take the lock or raise :class:`RunRefused` naming the ``run`` that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunRefused(_held_message(plan, holder)) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "api": plan.api_url, "started": time.time()}
        os.write(fd, json.dumps(record).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock


def _read_holder(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(data, dict):
            return data
    return {}


def _held_message(plan: RunPlan, holder: dict[str, Any]) -> str:
    pid = holder.get("pid")
    who = f"another `interest-stream run` (pid {pid})" if pid else "another `interest-stream run`"
    api = holder.get("api")
    use = f"; use it through its API at {api}" if api else ""
    stop = f" (Ctrl-C in its terminal, or kill {pid})" if pid else ""
    return (
        f"{who} is already running on the embedded store {plan.qdrant_path}{use}, or stop it{stop}"
    )


def preflight(plan: RunPlan) -> tuple[RunLock | None, list[str]]:
    """The checks before any worker starts: the run lock (held until released), the store
    folder and the API port. Raises :class:`RunRefused`; returns the lock and warnings."""
    lock = None
    if plan.qdrant_url is None:
        lock = RunLock(plan.qdrant_path)
        lock.acquire(plan)
    try:
        if plan.qdrant_url is None:
            _check_store_free(plan.qdrant_path)
        if plan.api_url is not None:
            _check_api_port(plan)
    except RunRefused:
        if lock is not None:
            lock.release()
        raise
    warnings = []
    if plan.stream_metrics is not None and port_taken(*plan.stream_metrics):
        host, port = plan.stream_metrics
        warnings.append(
            f"warning: port {port} on {host} is taken, so the stream worker runs without /metrics "
            "(set INTEREST_STREAM_METRICS_PORT, 0 = any free port)"
        )
    return lock, warnings


def _check_store_free(folder: Path) -> None:
    path = folder / STORE_LOCK
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunRefused(
            f"the embedded Qdrant folder {folder} is in use by another process (an "
            "`interest-stream embed`, or a command reading it); stop it, or set "
            "INTEREST_QDRANT_PATH to another folder or INTEREST_QDRANT_URL to a Qdrant server"
        ) from None
    finally:
        os.close(fd)  # releases the lock if it was taken


def _check_api_port(plan: RunPlan) -> None:
    api = plan.api
    if not port_taken(api.host, api.port):
        return
    health = probe(f"{api.url}/healthz")
    if health is not None and health.get("worker") == "embed":
        raise RunRefused(
            f"an interest-stream service already serves its API at {api.url} (embed group "
            f"{health.get('group')}); use it, stop it, or set INTEREST_API_PORT for a second one"
        )
    raise RunRefused(
        f"port {api.port} on {api.host} is taken by another program, so the embed worker could "
        "not serve its API; set INTEREST_API_PORT (0 = any free port) or INTEREST_API_ENABLED=false"
    )


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        return sock.connect_ex((host, port)) == 0


def probe(url: str) -> dict[str, Any] | None:
    """A ``/healthz`` body (whatever its status code), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:  # 503 while starting: the body still says why
        body = exc.read()
    except (urllib.error.URLError, OSError):
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(body)
        if isinstance(data, dict):
            return data
    return None


def banner(plan: RunPlan) -> list[str]:
    """What ``run`` prints before it starts the workers."""
    store = (
        f"Qdrant server at {plan.qdrant_url}"
        if plan.qdrant_url
        else f"embedded Qdrant in {plan.qdrant_path}"
    )
    metrics = f", metrics {plan.stream_metrics_url}/metrics" if plan.stream_metrics_url else ""
    if plan.api_url:
        api = f"{plan.api_url} (profile, recommend, items load; /healthz, /metrics)"
    elif plan.api.enabled:
        api = f"on a free port of {plan.api.host} (INTEREST_API_PORT=0)"
    else:
        api = "off (INTEREST_API_ENABLED=false)"
    return [
        f"interest-stream run (pid {os.getpid()}): starting a stream worker and an embed worker",
        f"  Kafka    {plan.kafka.bootstrap}: events {plan.topics.events} -> updates "
        f"{plan.topics.updates}, dead letters {plan.topics.dlq}",
        f"  stream   consumer group {plan.stream_group}{metrics}",
        f"  embed    consumer group {plan.embed_group}, model {plan.model_name}",
        f"  store    {store}",
        f"  API      {api}",
        "waiting for the workers to join their groups (loading the model takes a few seconds)",
    ]


class Readiness:
    """Polls the workers' ``/healthz`` (the supervisor's tick) and says once when both consume.

    A worker whose health cannot be asked (API off, metrics on a random port) counts as up.
    """

    def __init__(self, plan: RunPlan, say: Callable[[str], None]) -> None:
        self.plan = plan
        self.say = say
        self.urls = {
            "stream": f"{plan.stream_metrics_url}/healthz" if plan.stream_metrics_url else None,
            "embed": f"{plan.api_url}/healthz" if plan.api_url else None,
        }
        self.up: set[str] = {name for name, url in self.urls.items() if url is None}
        self.last_probe = -PROBE_EVERY_S
        self.last_remind = 0.0
        self.announced = False

    def __call__(self, elapsed_s: float) -> None:
        if self.announced or elapsed_s - self.last_probe < PROBE_EVERY_S:
            return
        self.last_probe = elapsed_s
        states = {}
        for name, url in self.urls.items():
            if url is None or name in self.up:
                continue
            health = probe(url)
            if health is not None and health.get("consuming"):
                self.up.add(name)
            else:
                states[name] = str(health.get("status")) if health else "no answer yet"
        if len(self.up) == len(self.urls):
            self.announced = True
            self.say(self._up_line(elapsed_s))
        elif elapsed_s - self.last_remind >= REMIND_EVERY_S:
            self.last_remind = elapsed_s
            waiting = ", ".join(f"{n} worker: {s}" for n, s in sorted(states.items()))
            self.say(f"still starting after {elapsed_s:.0f} s ({waiting})")

    def _up_line(self, elapsed_s: float) -> str:
        where = f"; API at {self.plan.api_url}" if self.plan.api_url else ""
        return f"workers up in {elapsed_s:.1f} s{where}. Ctrl-C stops them gracefully"
