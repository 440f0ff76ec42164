"""``aqi replay --simulate`` simulates in a child process: same records, same order, no orphan."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import UTC, datetime
from itertools import islice

import pytest

from aqi.core.errors import AqiError
from ingestion.producer import encode_records
from ingestion.replay import simulated_records
from ingestion.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.unit

END = datetime(2025, 6, 1, tzinfo=UTC)


def test_the_child_sends_exactly_the_simulation_encoded_in_order() -> None:
    config = SimulationConfig(locations=12, days=5, seed=11, end=END)
    expected = list(encode_records(simulate(config)))
    assert len(expected) > 2 * 2000  # more than one chunk, and a partial last one
    assert list(simulated_records(config)) == expected


def test_closing_early_stops_the_child() -> None:
    records = simulated_records(SimulationConfig(locations=50, days=30, seed=1, end=END))
    assert len(list(islice(records, 10))) == 10
    (child,) = [p for p in multiprocessing.active_children() if p.name == "aqi-simulator"]
    records.close()
    assert not child.is_alive()


def test_a_child_that_dies_is_an_error_not_a_short_stream() -> None:
    records = simulated_records(SimulationConfig(locations=50, days=30, seed=1, end=END))
    next(records)
    (child,) = [p for p in multiprocessing.active_children() if p.name == "aqi-simulator"]
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(AqiError, match="simulator process stopped unexpectedly"):
        for _ in records:
            pass
