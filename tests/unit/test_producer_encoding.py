"""What goes on Kafka: the producer's encoder writes the contract's compact UTF-8 JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ingestion.events import event_key, validate_event
from ingestion.fixtures import DEFAULT_FIXTURES_DIR
from ingestion.producer import encode_event
from ingestion.replay import fixture_events
from ingestion.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.unit


def _events() -> list[dict]:
    events, _ = fixture_events(DEFAULT_FIXTURES_DIR)
    return events + list(simulate(SimulationConfig(locations=9, days=1, end=datetime(2025, 6, 1, tzinfo=UTC))))


def test_encoding_is_the_compact_json_of_the_event() -> None:
    """orjson writes exactly what json.dumps(ensure_ascii=False, compact) writes, µ and all."""
    for event in _events():
        encoded = encode_event(event)
        assert encoded == json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        decoded = json.loads(encoded)
        validate_event(decoded)
        assert decoded == event


def test_key_is_the_sensor_id() -> None:
    event = _events()[0]
    assert event_key(event) == str(event["sensor_id"]).encode()
    assert "µg/m³".encode() in b"".join(encode_event(e) for e in _events()[:50])
