"""Putting events on Kafka so that none is lost and none is sent twice by us.

``acks=all``, the idempotent producer (the broker drops a retried duplicate), gzip
compression (in the standard library, so every consumer can read it), keyed by sensor id.
:meth:`EventProducer.send` waits for every record of a batch to be acknowledged and raises
if any failed after the client's own retries: callers advance their checkpoints only after
it returns, so a failure means "resend from the last checkpoint", never a silent gap.

Public surface: :class:`EventProducer`, :func:`producer_from_settings`, :class:`ProducerError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Self

from kafka import KafkaProducer
from kafka.errors import KafkaError

from aqi.config import Settings
from aqi.connections import kafka_bootstrap_servers
from aqi.errors import AqiError
from aqi.topics import ensure_topic
from ingestion.events import event_key

__all__ = ["EventProducer", "ProducerError", "encode_event", "producer_from_settings"]


class ProducerError(AqiError):
    """Kafka did not acknowledge every event of a batch."""


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (units such as µg/m³ stay readable)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


class EventProducer:
    """A keyed, idempotent, acknowledged producer for measurement events."""

    def __init__(
        self, bootstrap_servers: str, topic: str, *, partitions: int = 3, linger_ms: int = 20
    ) -> None:
        self.topic = topic
        try:
            ensure_topic(bootstrap_servers, topic, partitions)
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                client_id="aqi-ingestion",
                acks="all",
                enable_idempotence=True,
                compression_type="gzip",
                linger_ms=linger_ms,
                retries=10,
                max_in_flight_requests_per_connection=5,
                delivery_timeout_ms=120_000,
            )
        except KafkaError as exc:
            raise ProducerError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from None
        self.sent = 0

    def send(self, events: Iterable[dict[str, Any]]) -> int:
        """Send a batch and wait until Kafka acknowledged all of it. Returns the count."""
        futures = []
        try:
            for event in events:
                futures.append(
                    self._producer.send(self.topic, key=event_key(event), value=encode_event(event))
                )
            self._producer.flush()
            for future in futures:
                future.get(timeout=60)
        except KafkaError as exc:
            raise ProducerError(
                f"Kafka did not acknowledge a batch of {len(futures)} events: {exc}"
            ) from None
        self.sent += len(futures)
        return len(futures)

    def close(self) -> None:
        self._producer.close(timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def producer_from_settings(settings: Settings) -> EventProducer:
    """The producer for ``AQ_KAFKA_TOPIC`` on the configured (or embedded) broker."""
    return EventProducer(
        kafka_bootstrap_servers(settings),
        settings.kafka_topic,
        partitions=settings.kafka_partitions,
    )
