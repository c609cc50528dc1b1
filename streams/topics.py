"""Create the service's topics if they are missing (idempotent, safe on a shared cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, TopicAlreadyExistsError

from streams.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The brokers in INTEREST_KAFKA_BOOTSTRAP could not be reached; one line for the CLI."""


def unreachable(
    kafka: KafkaSettings, exc: BaseException, reason: str | None = None
) -> KafkaUnavailable:
    """The CLI's one line for a client that could not start; ``reason`` (from
    :func:`refusal`) names a failed login or an untrusted certificate instead."""
    if reason is not None:
        return KafkaUnavailable(f"cannot connect to Kafka at {kafka.bootstrap}: {reason}")
    return KafkaUnavailable(
        f"cannot reach Kafka at {kafka.bootstrap} ({exc}); "
        "start the local broker with `interest-stream broker start` or set INTEREST_KAFKA_BOOTSTRAP"
    )


async def refusal(kafka: KafkaSettings, timeout_s: float = 5.0) -> str | None:
    """Why a secured cluster refused us (TLS or SASL), or None: aiokafka's bootstrap error only
    says "Unable to bootstrap", so one direct connection to the first broker asks again."""
    if kafka.security_protocol.upper() == "PLAINTEXT":
        return None
    from aiokafka.conn import create_conn

    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    kw = kafka.client_kwargs()
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host.strip("[]"), int(port), client_id=kafka.client_id,
                request_timeout_ms=int(timeout_s * 1000), ssl_context=kw.get("ssl_context"),
                security_protocol=kafka.security_protocol,
                sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
                sasl_plain_username=kafka.sasl_username,
                sasl_plain_password=kw.get("sasl_plain_password"),
            ),
            timeout_s,
        )  # fmt: skip
    except SaslAuthenticationFailed:
        return (
            f"the SASL login of user {kafka.sasl_username!r} ({kafka.sasl_mechanism}) was "
            "refused: wrong user name or password (INTEREST_KAFKA_SASL_USERNAME, "
            "INTEREST_KAFKA_SASL_PASSWORD or INTEREST_KAFKA_SASL_PASSWORD_FILE)"
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"its TLS certificate is not trusted ({exc.verify_message}); set "
            "INTEREST_KAFKA_SSL_CAFILE to the CA that signed it"
        )
    except ssl.SSLError as exc:
        return f"the TLS handshake failed ({exc.reason or exc})"
    except Exception:  # unreachable, closed, timed out: the caller's message says that
        return None
    conn.close()
    return None


#: Topic configs of the compacted topics that hold the latest value per key.
COMPACTED: Final[Mapping[str, str]] = {"cleanup.policy": "compact"}


class PartitionMismatch(RuntimeError):
    """The events topic was re-partitioned after stream state was built (one line for the CLI)."""


async def ensure_topics(
    kafka: KafkaSettings,
    topics: TopicSettings,
    names: tuple[str, ...] | None = None,
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Create ``names`` (default: events, DLQ, updates) where missing; return those created.

    ``configs`` gives topic configs by name (e.g. :data:`COMPACTED`); ``partitions`` overrides
    ``INTEREST_TOPICS_PARTITIONS``. An existing topic is left as it is.
    """
    wanted = names or topics.all()
    async with admin_client(kafka) as admin:
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        count = partitions or topics.partitions
        new = [
            NewTopic(
                n,
                num_partitions=count,
                replication_factor=topics.replication_factor,
                topic_configs=dict((configs or {}).get(n, {})),
            )
            for n in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            await admin.create_topics(new)
        log.info("created topics %s with %d partitions", missing, count)
        return missing


async def ensure_popularity_topic(kafka: KafkaSettings, topics: TopicSettings) -> None:
    """Create the item popularity topic (compacted: the latest value per item) if it is missing.

    The stream workers write it and the embed workers read it; either may start first.
    """
    await ensure_topics(kafka, topics, (topics.popularity,), configs={topics.popularity: COMPACTED})


async def ensure_copartitioned(
    kafka: KafkaSettings, topics: TopicSettings, internal: Sequence[str], changelogs: Sequence[str]
) -> int:
    """Create missing ``internal`` topics like the events topic; return its partition count.

    The stream worker's internal topics (repartition topics) and its tables' changelogs must have
    exactly as many partitions as the events topic: a user's state lives in partition
    ``murmur2(user_id) % N`` of the events, repartition and changelog topics, and faust assigns
    them together. Raises :class:`PartitionMismatch` if an existing one differs.
    """
    async with admin_client(kafka) as admin:
        partitions = await _partition_count(admin, topics.events)
        existing = set(await admin.list_topics())
        for name in (*internal, *changelogs):
            if name in existing and (n := await _partition_count(admin, name)) != partitions:
                raise PartitionMismatch(
                    f"topic {name} has {n} partitions but {topics.events} has {partitions}; "
                    "per-user stream state is partitioned like the events topic"
                )
    await ensure_topics(kafka, topics, tuple(internal), partitions=partitions)
    return partitions


async def _partition_count(admin: AIOKafkaAdminClient, name: str, wait_s: float = 15.0) -> int:
    """Partitions of ``name``. A topic created a moment ago may describe with none (or an error)
    until its partitions have leaders: ask again for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        (meta,) = await admin.describe_topics([name])
        count = len(meta.get("partitions") or ())
        if count and not meta.get("error_code"):
            return count
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topic {name} has no partitions (error {meta.get('error_code')})")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def admin_client(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (a one-line :class:`KafkaUnavailable` if the brokers are down)."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise unreachable(kafka, exc, await refusal(kafka)) from exc
    try:
        yield admin
    finally:
        await admin.close()
