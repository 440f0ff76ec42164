"""Putting events on Kafka so that none is lost and none is sent twice by us.

``acks=all``, the idempotent producer (the broker drops a retried duplicate and keeps each
partition in order), lz4 compression (cheap on the CPU; Spark's Kafka source reads it), keyed
by sensor id, through confluent-kafka (librdkafka), which sends from its own thread.

Sends are pipelined: :meth:`EventProducer.send` queues a batch and returns at once, so the
next batch is read from OpenAQ or simulated while Kafka acknowledges the previous ones. What a
caller must do only after Kafka has the events (move a backfill checkpoint, remember readings
as sent) it passes as ``then``: it runs on the caller's thread, in send order, once that
batch and every earlier one were acknowledged, and never after a failure. A failure raises
:class:`ProducerError` at the next :meth:`send`/:meth:`flush`, so callers resend from their
last checkpoint: a gap is never silent.

Public surface: :class:`EventProducer`, :func:`producer_from_settings`, :class:`ProducerError`,
:func:`encode_event`, :func:`encode_records`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from aqi.core.config import Settings
from aqi.core.connections import kafka_bootstrap_servers
from aqi.core.errors import AqiError
from aqi.core.topics import KafkaUnavailable, await_broker, client_config, ensure_topic
from ingestion.events import event_key

__all__ = [
    "EventProducer",
    "ProducerError",
    "encode_event",
    "encode_records",
    "producer_from_settings",
]

#: how long a record may wait for its acknowledgement (librdkafka retries inside it)
DELIVERY_TIMEOUT_MS = 120_000


class ProducerError(AqiError):
    """Kafka did not acknowledge every event that was sent."""


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (units such as µg/m³ stay readable), by orjson.

    orjson writes the same JSON as ``json.dumps(..., ensure_ascii=False, separators=(",",
    ":"))`` for events, about ten times faster; a NaN or infinity (never in an event the
    project builds) would become ``null`` rather than the invalid JSON ``json`` writes.
    """
    return orjson.dumps(event)


def encode_records(events: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, bytes]]:
    """The Kafka (key, value) of each event: its sensor id and its JSON."""
    for event in events:
        yield event_key(event), orjson.dumps(event)


@dataclass
class _Batch:
    """One :meth:`EventProducer.send` call: its records not yet acknowledged, its callback."""

    size: int
    then: Callable[[], None] | None
    waiting: int = 0
    error: str | None = None

    def delivered(self, err: KafkaError | None, _msg: object) -> None:
        # runs in poll()/flush() on the caller's thread (librdkafka serves callbacks there)
        self.waiting -= 1
        if err is not None and self.error is None:
            self.error = err.str()


class EventProducer:
    """A keyed, idempotent, acknowledged, pipelined producer for measurement events."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        partitions: int = 3,
        linger_ms: int = 20,
        delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
    ) -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.delivery_timeout_ms = delivery_timeout_ms
        try:
            ensure_topic(bootstrap_servers, topic, partitions)
            self._producer = Producer(
                client_config(
                    bootstrap_servers,
                    "aqi-ingestion",
                    acks="all",
                    **{
                        "enable.idempotence": True,
                        "compression.type": "lz4",
                        "linger.ms": linger_ms,
                        "batch.size": 1_000_000,
                        "queue.buffering.max.messages": 500_000,
                        "delivery.timeout.ms": delivery_timeout_ms,
                    },
                )
            )
        except (KafkaUnavailable, KafkaException) as exc:
            raise ProducerError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from None
        self._pending: deque[_Batch] = deque()
        #: events acknowledged so far
        self.sent = 0

    def send(self, events: Iterable[dict[str, Any]], then: Callable[[], None] | None = None) -> int:
        """Queue a batch without waiting for Kafka; returns how many events it holds.

        ``then`` runs once this batch and every earlier one were acknowledged (possibly
        during a later :meth:`send`, at the latest in :meth:`flush`). An empty batch with a
        ``then`` is a barrier: it runs once everything sent before it was acknowledged.
        """
        return self.send_records(encode_records(events), then)

    def send_records(
        self, records: Iterable[tuple[bytes, bytes]], then: Callable[[], None] | None = None
    ) -> int:
        """:meth:`send` for events already encoded by :func:`encode_records` (key, value).

        For a producer fed by another process (``aqi replay --simulate`` simulates and
        encodes in a child process, so that this one only sends).
        """
        self._raise_if_failed()
        batch = _Batch(size=0, then=then)
        self._pending.append(batch)
        produce, topic = self._producer.produce, self.topic
        for key, value in records:
            batch.size += 1
            batch.waiting += 1
            while True:
                try:
                    produce(topic, value, key, on_delivery=batch.delivered)
                    break
                except BufferError:  # the local queue is full: let librdkafka catch up
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    batch.waiting -= 1
                    batch.error = batch.error or exc.args[0].str()
                    break
        self._producer.poll(0)
        self._settle()
        return batch.size

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until Kafka acknowledged everything sent; raise :class:`ProducerError` if not.

        Waits at most ``timeout_s`` (default: the delivery timeout and half a minute).
        """
        if timeout_s is None:
            timeout_s = self.delivery_timeout_ms / 1000 + 30
        deadline = time.monotonic() + timeout_s
        while self._pending:
            self._producer.flush(max(0.1, min(1.0, deadline - time.monotonic())))
            self._settle()
            if self._pending and time.monotonic() > deadline:
                waiting = sum(b.waiting for b in self._pending)
                raise ProducerError(
                    f"Kafka at {self.bootstrap_servers} did not acknowledge {waiting} events "
                    f"within {timeout_s:.0f} s"
                )

    def close(self) -> None:
        """Flush and let go of the client (raises if something was not acknowledged)."""
        try:
            self.flush()
        finally:
            self._pending.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: do not wait two minutes for a broker that may be gone
            self._producer.flush(5)
            self._pending.clear()

    def _settle(self) -> None:
        """Run the callbacks of the acknowledged batches at the head of the queue."""
        while self._pending and self._pending[0].waiting == 0:
            batch = self._pending[0]
            if batch.error is not None:
                self._raise_if_failed()
            self._pending.popleft()
            self.sent += batch.size
            if batch.then is not None:
                batch.then()

    def _raise_if_failed(self) -> None:
        failed = next((b for b in self._pending if b.error is not None), None)
        if failed is None:
            return
        lost = sum(b.size for b in self._pending)
        self._pending.clear()
        raise ProducerError(
            f"Kafka at {self.bootstrap_servers} did not acknowledge a batch ({failed.error}); "
            f"{lost} events since the last acknowledged one must be sent again"
        )


def producer_from_settings(settings: Settings) -> EventProducer:
    """The producer for ``AQ_KAFKA_TOPIC`` on the configured (or embedded) Kafka.

    A broker that does not answer yet gets ``AQ_KAFKA_WAIT_SECONDS`` (one still starting, as
    in docker compose), as ``aqi stream`` gives it; then one :class:`ProducerError`.
    """
    servers = kafka_bootstrap_servers(settings)
    try:
        await_broker(servers, settings.kafka_wait_seconds)
    except KafkaUnavailable as exc:
        raise ProducerError(str(exc)) from None
    return EventProducer(servers, settings.kafka_topic, partitions=settings.kafka_partitions)
