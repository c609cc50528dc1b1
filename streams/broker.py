"""A local, single-node Apache Kafka broker (KRaft, combined broker + controller), no Docker.

``interest-stream broker start|stop|status`` use this module. The broker's jars come from Maven
Central through ``deploy/local/pom.xml`` (resolved once per machine into ``jars_dir``); its data,
config, log and pid file live under ``<INTEREST_DATA_DIR>/kafka`` unless ``INTEREST_BROKER_DIR``
says otherwise. It listens on 127.0.0.1 only.

Lifecycle guarantees: ``start`` is idempotent, formats storage once and returns only when the broker
answers metadata requests; ``stop`` leaves no java process behind (SIGTERM, then SIGKILL after a
grace period, and a sweep for strays started with this broker's config).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from models.config import CoreSettings
from streams.settings import BrokerSettings, KafkaSettings

POM_PATH = Path(__file__).resolve().parents[1] / "deploy" / "local" / "pom.xml"
MIN_JAVA = 17
SCRAM = "SCRAM-SHA-512"
#: The broker's own SCRAM user (it talks SASL_SSL to itself: the listener is its only one).
ADMIN_USER = "interest-broker"

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = warn
"""


class BrokerError(RuntimeError):
    """Anything that stops the local broker from starting; the message is one line for the CLI."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    bootstrap: str
    pid: int | None
    directory: Path
    #: For a SASL_SSL broker: the INTEREST_KAFKA_* settings a client needs (no secret in them).
    client_env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        where = f"{self.bootstrap}, data in {self.directory}"
        if self.running:
            text = f"running (pid {self.pid}) at {where}"
        else:
            text = f"not running (would listen on {where})"
        if self.client_env:
            text += "; clients: " + " ".join(f"{k}={v}" for k, v in self.client_env)
        return text


class LocalBroker:
    """Start, stop and inspect the local broker described by ``BrokerSettings``.

    >>> broker = LocalBroker(BrokerSettings(port=29092), CoreSettings(data_dir="/tmp/x"))
    >>> broker.bootstrap
    '127.0.0.1:29092'
    """

    def __init__(self, settings: BrokerSettings, core: CoreSettings) -> None:
        self.settings = settings
        self.directory = settings.effective_dir(core)
        self.data_dir = self.directory / "data"
        self.props_path = self.directory / "server.properties"
        self.log_path = self.directory / "broker.log"
        self.stdout_path = self.directory / "broker.out"
        self.pid_path = self.directory / "broker.pid"
        self.cluster_id_path = self.directory / "cluster.id"
        self.security_path = self.directory / "security"
        self.tls_dir = self.directory / "tls"
        self.ca_path = self.tls_dir / "ca.pem"
        self.keystore_path = self.tls_dir / "broker.pem"
        self.secrets_dir = self.directory / "secrets"

    @property
    def secure(self) -> bool:
        return self.settings.security == "sasl_ssl"

    def password_file(self, user: str) -> Path:
        """Where the generated SCRAM password of ``user`` lives (mode 0600)."""
        return self.secrets_dir / f"{user}.password"

    def client_env(self) -> dict[str, str]:
        """The INTEREST_KAFKA_* settings that reach this broker (the password by file only)."""
        env = {"INTEREST_KAFKA_BOOTSTRAP": self.bootstrap}
        if self.secure:
            env |= {
                "INTEREST_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "INTEREST_KAFKA_SASL_MECHANISM": SCRAM,
                "INTEREST_KAFKA_SASL_USERNAME": self.settings.sasl_username,
                "INTEREST_KAFKA_SASL_PASSWORD_FILE": str(
                    self.password_file(self.settings.sasl_username)
                ),
                "INTEREST_KAFKA_SSL_CAFILE": str(self.ca_path),
            }
        return env

    def client_settings(self) -> KafkaSettings:
        """KafkaSettings of a client of this broker (as :meth:`client_env` says)."""
        if not self.secure:
            return KafkaSettings(bootstrap=self.bootstrap, request_timeout_s=5.0)
        return KafkaSettings(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM,
            sasl_username=self.settings.sasl_username,
            sasl_password_file=self.password_file(self.settings.sasl_username),
            ssl_cafile=self.ca_path,
            request_timeout_s=5.0,
        )

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    # -- public API -------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        pid = self._live_pid()
        running = pid is not None and _port_open(self.settings.host, self.settings.port)
        shown = tuple(self.client_env().items())[1:] if self.secure else ()
        return BrokerStatus(running, self.bootstrap, pid, self.directory, shown)

    def start(self) -> BrokerStatus:
        """Start the broker unless it already runs; return once it answers metadata requests."""
        current = self.status()
        if current.pid is not None:
            self._wait_ready(current.pid)
            return self.status()
        if _port_open(self.settings.host, self.settings.port):
            raise BrokerError(
                f"port {self.settings.port} on {self.settings.host} is taken by another program; "
                "stop it or set INTEREST_BROKER_PORT"
            )
        java = require_java()
        jars = ensure_jars(self.settings)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_security()
        if self.secure:
            self._ensure_tls()
        self._write_config()
        self._format_storage(java, jars)
        pid = self._launch(java, jars)
        self._wait_ready(pid)
        return self.status()

    def stop(self, grace_s: float = 30.0) -> bool:
        """Stop the broker; True if one was running. Leaves no java process of this broker."""
        pids = set(self._stray_pids())
        pid = self._live_pid()
        if pid is not None:
            pids.add(pid)
        for p in pids:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        for p in pids:
            if _alive(p):
                _signal_group(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        self.pid_path.unlink(missing_ok=True)
        return bool(pids)

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.stdout_path, self.log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(no broker log yet)"

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        s = self.settings
        cport = s.effective_controller_port()
        name = "SASL_SSL" if self.secure else "PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{cport}",
            "listeners": f"{name}://{s.host}:{s.port},CONTROLLER://{s.host}:{cport}",
            "advertised.listeners": f"{name}://{s.host}:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": name,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{name}:{name}",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # The 3 s default delays every consumer group's first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            **(self._security_props() if self.secure else {}),
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self.props_path.touch()
        self.props_path.chmod(0o600)  # holds the broker user's password when secure
        self.props_path.write_text(text)
        log4j = _LOG4J2.format(log=self.log_path, level="INFO")
        (self.directory / "log4j2.properties").write_text(log4j)

    def _format_storage(self, java: str, jars: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return  # formatted once; formatting again would refuse or wipe the cluster id
        if not self.cluster_id_path.exists():
            out = _run([java, "-cp", f"{jars}/*", "kafka.tools.StorageTool", "random-uuid"])
            cluster_id = out.strip().splitlines()[-1].strip()
            self.cluster_id_path.write_text(cluster_id)
        cluster_id = self.cluster_id_path.read_text().strip()
        args = ["kafka.tools.StorageTool", "format", "-g", "-t", cluster_id, "-c",
                str(self.props_path), *self._scram_args()]  # fmt: skip
        # The arguments go through an @argfile (0600): SCRAM passwords stay out of `ps`.
        argfile = self.secrets_dir / "format.args" if self.secure else None
        if argfile is None:
            _run([java, "-cp", f"{jars}/*", *args])
            return
        argfile.write_text("".join(f'"{a}"\n' for a in args))
        try:
            _run([java, "-cp", f"{jars}/*", f"@{argfile}"])
        finally:
            argfile.unlink(missing_ok=True)
        self.security_path.write_text(self.settings.security)

    def _check_security(self) -> None:
        """A data dir keeps the listener it was formatted for (SCRAM users exist only then)."""
        formatted = (self.data_dir / "meta.properties").exists()
        was = self.security_path.read_text().strip() if self.security_path.exists() else None
        if formatted and (was or "plaintext") != self.settings.security:
            raise BrokerError(
                f"{self.directory} was formatted for a {was or 'plaintext'} broker, not "
                f"{self.settings.security}: use another INTEREST_DATA_DIR or delete that folder"
            )

    def _ensure_tls(self) -> None:
        """A CA and a broker certificate for 127.0.0.1/localhost (once), and the SCRAM
        passwords (random, 0600 files)."""
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for user in (ADMIN_USER, self.settings.sasl_username):
            path = self.password_file(user)
            if not path.exists():
                path.touch(mode=0o600)
                path.write_text(secrets.token_urlsafe(24) + "\n")
        if not self.keystore_path.exists():
            make_ca_and_cert(self.tls_dir, self.settings.host)

    def _password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def _security_props(self) -> dict[str, str]:
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{self._password(ADMIN_USER)}";'
        )
        return {
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_path),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_path),
        }

    def _scram_args(self) -> list[str]:
        if not self.secure:
            return []
        users = (ADMIN_USER, self.settings.sasl_username)
        return [
            a
            for u in users
            for a in ("--add-scram", f"{SCRAM}=[name={u},password={self._password(u)}]")
        ]

    def _launch(self, java: str, jars: Path) -> int:
        cmd = [
            java,
            f"-Xmx{self.settings.heap}",
            f"-Xms{min_heap(self.settings.heap)}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(self.props_path),
        ]
        with self.stdout_path.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; stop() signals its process group
                cwd=self.directory,
            )
        self.pid_path.write_text(str(proc.pid))
        return proc.pid

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not _alive(pid):
                self.pid_path.unlink(missing_ok=True)
                raise BrokerError(
                    f"the broker exited during start-up; log tail:\n{self.log_tail()}"
                )
            if _port_open(self.settings.host, self.settings.port):
                try:
                    asyncio.run(_metadata_ready(self.client_settings()))
                    return
                except Exception as exc:  # any client error means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise BrokerError(
            f"the broker did not answer metadata requests within "
            f"{self.settings.start_timeout_s:.0f} s ({last_error}); log tail:\n{self.log_tail()}"
        )

    def _live_pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid) and str(self.props_path) in _cmdline(pid):
            return pid
        return None

    def _stray_pids(self) -> list[int]:
        """Java processes started with this broker's config file (e.g. a lost pid file)."""
        mine = str(self.props_path)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and entry.name != str(os.getpid()):
                cmd = _cmdline(int(entry.name))
                if "kafka.Kafka" in cmd and mine in cmd:
                    found.append(int(entry.name))
        return found


# -- helpers ------------------------------------------------------------------------------------


def require_java() -> str:
    """Path of a Java >= 17 runtime, or a BrokerError saying exactly what to install."""
    java = shutil.which("java")
    hint = "install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
    if java is None:
        raise BrokerError(f"java not found on PATH: {hint}")
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        raise BrokerError(f"cannot tell the version of {java}: {hint}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise BrokerError(f"{java} is Java {major}; Kafka 4.x needs {MIN_JAVA}+: {hint}")
    return java


def ensure_jars(settings: BrokerSettings, pom: Path = POM_PATH) -> Path:
    """Resolve the broker's jars with Maven once per pom version; return the jars folder."""
    if not pom.exists():
        raise BrokerError(f"{pom} is missing: run from a checkout of interest-stream")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    jars = settings.jars_dir / digest
    stamp = jars / ".complete"
    if stamp.exists():
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "mvn not found on PATH: the local broker's jars come from Maven Central through "
            "Maven (Debian/Ubuntu: apt-get install maven)"
        )
    tmp = jars.with_name(jars.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise BrokerError(f"Maven could not resolve the Kafka jars ({' '.join(cmd)}):\n{tail}")
    (tmp / ".complete").write_text(digest)
    shutil.rmtree(jars, ignore_errors=True)
    tmp.rename(jars)
    return jars


def min_heap(heap: str) -> str:
    """Start small: a quarter of -Xmx, at least 128m (the machine may be shared)."""
    match = re.fullmatch(r"(\d+)([kmgKMG])", heap)
    if not match:
        return heap
    value, unit = int(match.group(1)), match.group(2).lower()
    mib = value * {"k": 1 / 1024, "m": 1, "g": 1024}[unit]
    return f"{max(128, int(mib // 4))}m"


def make_ca_and_cert(tls_dir: Path, host: str, days: int = 3650) -> None:
    """With openssl: a CA (``ca.pem``, its key ``ca.key``) and a broker key + certificate signed
    by it for ``host``, 127.0.0.1 and localhost, in one PEM (``broker.pem``, Kafka's PEM keystore).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerError("openssl not found on PATH: the SASL_SSL broker's CA is made with it")
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    t = {n: str(tls_dir / n) for n in ("ca.key", "ca.pem", "b.key", "b.csr", "b.crt", "ext")}
    names = {"DNS:localhost", "IP:127.0.0.1", f"{'IP' if _is_ip(host) else 'DNS'}:{host}"}
    Path(t["ext"]).write_text(f"subjectAltName={','.join(sorted(names))}\n")
    key = ["-newkey", "rsa:2048", "-nodes"]
    _run([openssl, "req", "-x509", *key, "-keyout", t["ca.key"], "-out", t["ca.pem"],
          "-days", str(days), "-subj", "/CN=interest-stream local CA"])  # fmt: skip
    _run([openssl, "req", *key, "-keyout", t["b.key"], "-out", t["b.csr"], "-subj", f"/CN={host}"])
    sign = ["-CA", t["ca.pem"], "-CAkey", t["ca.key"], "-CAcreateserial", "-days", str(days)]
    _run([openssl, "x509", "-req", "-in", t["b.csr"], *sign, "-out", t["b.crt"],
          "-extfile", t["ext"]])  # fmt: skip
    pem = Path(t["b.key"]).read_text() + Path(t["b.crt"]).read_text()
    keystore = tls_dir / "broker.pem"
    keystore.touch(mode=0o600)
    keystore.write_text(pem)
    for name in ("b.key", "b.csr", "b.crt", "ext"):
        Path(t[name]).unlink()


def _is_ip(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


async def _metadata_ready(kafka: KafkaSettings) -> None:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(**kafka.client_kwargs())
    try:
        await client.bootstrap()
        if not client.cluster.brokers():
            raise BrokerError("metadata lists no broker yet")
    finally:
        await client.close()


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
        raise BrokerError(f"{cmd[3] if len(cmd) > 3 else cmd[0]} failed:\n{tail}")
    return proc.stdout


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
