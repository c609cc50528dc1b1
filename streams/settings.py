"""Settings for the Kafka side: the cluster to talk to, topic names, the local broker, intake rules.

One class per external system, all reading ``INTEREST_*`` environment variables and the optional
config file (see :mod:`models.config`)::

    INTEREST_KAFKA_BOOTSTRAP=kafka-1:9092,kafka-2:9092   # an existing cluster
    INTEREST_TOPICS_PARTITIONS=12                          # partitions of topics we create
    INTEREST_BROKER_PORT=9092                              # the local broker's port

The local broker's address is one setting: ``INTEREST_BROKER_HOST``/``INTEREST_BROKER_PORT`` move
the broker *and* every client, because ``KafkaSettings.bootstrap`` defaults to it. Setting
``INTEREST_KAFKA_BOOTSTRAP`` points the clients at another cluster instead.
"""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from models.config import ConfigFileError, CoreSettings, InterestSettings, read_secret_file
from models.generation import Generational, group_name, topic_name
from streams.contracts.events import DEFAULT_EARLIEST_MS, DEFAULT_TYPE_WEIGHTS, EventRules


def _local_broker_bootstrap() -> str:
    """The clients' default: wherever the local broker listens (see BrokerSettings)."""
    return BrokerSettings().bootstrap


class KafkaSettingsError(ConfigFileError):
    """A Kafka security setting is unusable (a missing file, a bad certificate): a configuration
    error, so the CLI prints it as one line (like a bad config file); never holds the password."""


#: The protocols that talk TLS (and so need an SSL context).
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaSettings(InterestSettings):
    """The Kafka cluster every worker and command talks to.

    Secured clusters (``security_protocol`` SSL, SASL_PLAINTEXT or SASL_SSL): the SASL password
    comes from ``INTEREST_KAFKA_SASL_PASSWORD`` or, better (no environment to leak), from the file
    ``INTEREST_KAFKA_SASL_PASSWORD_FILE`` names; it is a ``SecretStr``, so it never shows in a
    repr, a log line or an error. TLS trusts ``ssl_cafile`` (default: the system's CAs) and can
    present a client certificate (``ssl_certfile`` + ``ssl_keyfile``, mutual TLS).
    """

    config_section = "kafka"
    model_config = SettingsConfigDict(env_prefix="INTEREST_KAFKA_", extra="ignore")

    #: Default: the local broker's address (``INTEREST_BROKER_HOST``:``INTEREST_BROKER_PORT``).
    bootstrap: str = Field(default_factory=_local_broker_bootstrap)
    client_id: str = "interest-stream"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: A file holding the SASL password (a mounted secret); wins over ``sasl_password``.
    sasl_password_file: Path | None = None
    #: CA bundle (PEM) that signed the brokers' certificates; None: the system's CAs.
    ssl_cafile: Path | None = None
    #: Client certificate and key (PEM) for mutual TLS; both or neither.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    request_timeout_s: float = 30.0

    def password(self) -> str | None:
        """The SASL password in clear (for the client only): the file's first line, else the
        setting."""
        if self.sasl_password_file is not None:
            return read_secret_file(
                self.sasl_password_file, "INTEREST_KAFKA_SASL_PASSWORD_FILE", KafkaSettingsError
            )
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every client (None unless the protocol is SSL or SASL_SSL)."""
        if self.security_protocol.upper() not in TLS_PROTOCOLS:
            return None
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise KafkaSettingsError(
                "INTEREST_KAFKA_SSL_CERTFILE and INTEREST_KAFKA_SSL_KEYFILE go together"
            )
        cafile = self.ssl_cafile
        try:
            context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            if self.ssl_certfile is not None and self.ssl_keyfile is not None:
                context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSettingsError(
                f"Kafka TLS files (ssl_cafile={cafile}, ssl_certfile={self.ssl_certfile}, "
                f"ssl_keyfile={self.ssl_keyfile}) are unusable: {exc.strerror or exc}"
            ) from None
        context.check_hostname = self.ssl_check_hostname
        if not self.ssl_check_hostname:
            context.verify_mode = ssl.CERT_REQUIRED  # still verify the chain
        return context

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.password()
        return kwargs


class TopicSettings(Generational):
    """Topic names and how the topics we create are laid out."""

    config_section = "topics"
    model_config = SettingsConfigDict(env_prefix="INTEREST_TOPICS_", extra="ignore")

    events: str = "interest.events"
    dlq: str = "interest.events.dlq"
    updates: str = "interest.updates"
    #: Item popularity from the stream workers to the embed workers (key item_id, compacted;
    #: created by either worker, see streams.stream.popularity). Not in ``all()``: it is compacted.
    popularity: str = "interest.items.popularity"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def all(self) -> tuple[str, ...]:
        return (self.events, self.dlq, self.updates)

    def apply_generation(self, generation: int) -> None:
        """Generation N's own topics; ``events`` is every generation's source, shared."""
        for name in ("dlq", "updates", "popularity"):
            setattr(self, name, topic_name(getattr(self, name), generation))


class BrokerSettings(InterestSettings):
    """The local single-node Apache Kafka broker started by ``interest-stream broker start``."""

    config_section = "broker"
    model_config = SettingsConfigDict(env_prefix="INTEREST_BROKER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int | None = Field(default=None, ge=1, le=65535)
    heap: str = "768m"
    start_timeout_s: float = 90.0
    #: Where broker data and logs live; default: <INTEREST_DATA_DIR>/kafka.
    dir: Path | None = None
    #: Where Maven copies the broker's jars (shared by every data dir on the machine).
    jars_dir: Path = Path.home() / ".cache" / "interest-stream" / "kafka-jars"
    #: ``plaintext`` (default) or ``sasl_ssl``: one SASL_SSL listener (SCRAM-SHA-512) with TLS
    #: from a CA generated under ``<dir>/tls``; its SCRAM users are created when the storage is
    #: formatted (a data dir keeps the security it was formatted with).
    security: Literal["plaintext", "sasl_ssl"] = "plaintext"
    #: The SCRAM user clients log in as; its password is generated into
    #: ``<dir>/secrets/<user>.password`` (point INTEREST_KAFKA_SASL_PASSWORD_FILE at it).
    sasl_username: str = Field(default="interest", pattern=r"^[A-Za-z0-9._-]+$")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def effective_controller_port(self) -> int:
        return self.controller_port or self.port + 1

    def effective_dir(self, core: CoreSettings) -> Path:
        return self.dir or core.path("kafka")


class IntakeSettings(InterestSettings):
    """How incoming events are validated (see :mod:`streams.contracts.events`)."""

    config_section = "intake"
    model_config = SettingsConfigDict(env_prefix="INTEREST_INTAKE_", extra="ignore")

    type_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    allow_unknown_types: bool = False
    unknown_type_weight: float = 1.0
    max_message_bytes: int = Field(default=32 * 1024, ge=256)
    max_text_chars: int = Field(default=2000, ge=16)
    max_future_s: float = Field(default=300.0, ge=0)
    #: Events before this time are dead-lettered (``past_timestamp``; a number that makes sense
    #: as epoch seconds: ``seconds_timestamp``). ISO-8601; a time without zone is UTC.
    earliest_ts: datetime = Field(
        default_factory=lambda: datetime.fromtimestamp(DEFAULT_EARLIEST_MS / 1000, UTC)
    )
    #: Events older than this many seconds are dead-lettered (``past_timestamp``); 0 = no limit.
    max_age_s: float = Field(default=0.0, ge=0)
    max_abs_weight: float = Field(default=100.0, gt=0)

    def rules(self) -> EventRules:
        return EventRules(
            type_weights=dict(self.type_weights),
            allow_unknown_types=self.allow_unknown_types,
            unknown_type_weight=self.unknown_type_weight,
            max_message_bytes=self.max_message_bytes,
            max_text_chars=self.max_text_chars,
            max_future_ms=int(self.max_future_s * 1000),
            earliest_ms=int(_as_utc(self.earliest_ts).timestamp() * 1000),
            max_age_ms=int(self.max_age_s * 1000),
            max_abs_weight=self.max_abs_weight,
        )


def _as_utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class EmbedSettings(Generational):
    """The embed workers' consumer group and batching (see :mod:`streams.embed.worker`)."""

    config_section = "embed"
    model_config = SettingsConfigDict(env_prefix="INTEREST_EMBED_", extra="ignore")

    group_id: str = "interest-embed"
    #: Most jobs folded in one step (one retrieve, one model call, one upsert).
    max_batch_jobs: int = Field(default=512, ge=1)
    #: How long a poll waits for jobs before an idle loop turns round.
    poll_timeout_ms: int = Field(default=200, ge=1)
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    #: Also consume the popularity topic (same group) and set the items' ``popularity`` payload.
    apply_popularity: bool = True
    #: Seconds between two optimizations of the embedded store (index new items, compact the
    #: users' rewritten points), run between batches on the store thread; 0 turns it off. The
    #: embedded engine has no background optimizer; a Qdrant server does this itself.
    optimize_interval_s: float = Field(default=300.0, ge=0)

    def apply_generation(self, generation: int) -> None:
        self.group_id = group_name(self.group_id, generation)


class ApiSettings(InterestSettings):
    """The local HTTP API of the process that owns the store (profile, recommend, items).

    Security (see :mod:`streams.embed.api`): writes need the bearer token ``token`` (or the first
    line of the file ``token_file`` names, which wins: a mounted secret, no environment to leak);
    ``auth_reads`` asks it of reads too. With no token configured, writes are accepted only while
    the API listens on loopback (the single-machine default), refused otherwise. The token is a
    ``SecretStr``: it never shows in a repr, a log line or an error. The same settings tell the
    CLI's client which token to send.
    """

    config_section = "api"
    model_config = SettingsConfigDict(env_prefix="INTEREST_API_", extra="ignore")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    timeout_s: float = Field(default=30.0, gt=0)
    token: SecretStr | None = None
    #: A file holding the token (first line); wins over ``token``. Read when the API starts.
    token_file: Path | None = None
    #: Ask the token of reads too (profiles, recommendations, the Qdrant read endpoints).
    auth_reads: bool = False
    #: Largest request body accepted (413 above it); the CLI splits a catalog to fit.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: Writes per second each client address may make on average, and the burst it may spend.
    write_rate_per_s: float = Field(default=5.0, gt=0)
    write_burst: int = Field(default=20, ge=1)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can reach the API (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def bearer_token(self) -> str | None:
        """The token in clear (for the server's check and the client's header), or None."""
        if self.token_file is not None:
            text = read_secret_file(self.token_file, "INTEREST_API_TOKEN_FILE").strip()
            if not text:
                raise ConfigFileError(f"INTEREST_API_TOKEN_FILE={self.token_file}: empty")
            return text
        if self.token is None or not self.token.get_secret_value():
            return None
        return self.token.get_secret_value()
