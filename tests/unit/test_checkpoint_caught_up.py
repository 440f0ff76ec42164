"""When the drain task may skip Spark: read from a checkpoint laid out as Spark writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_streaming.job import checkpoint_is_caught_up

pytestmark = pytest.mark.unit

TOPIC = "openaq.measurements"


def _batch(checkpoint: Path, n: int, ends: dict, *, committed: bool = True) -> None:
    (checkpoint / "offsets").mkdir(parents=True, exist_ok=True)
    (checkpoint / "commits").mkdir(parents=True, exist_ok=True)
    meta = {"batchWatermarkMs": 0, "batchTimestampMs": 1, "conf": {}}
    source = {TOPIC: {str(p): o for p, o in ends.items()}}
    (checkpoint / "offsets" / str(n)).write_text(f"v1\n{json.dumps(meta)}\n{json.dumps(source)}")
    if committed:
        (checkpoint / "commits" / str(n)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def test_a_committed_last_batch_at_the_topic_end_is_caught_up(tmp_path: Path) -> None:
    _batch(tmp_path, 0, {0: 5, 1: 7})
    _batch(tmp_path, 1, {0: 60, 1: 134})
    assert checkpoint_is_caught_up(tmp_path, TOPIC, {0: 60, 1: 134})


@pytest.mark.parametrize(
    "ends",
    [{0: 61, 1: 134}, {0: 60}, {0: 60, 1: 134, 2: 0}, {}],
    ids=["new-records", "fewer-partitions", "new-partition", "no-topic"],
)
def test_anything_else_at_the_topic_end_needs_the_stream(tmp_path: Path, ends: dict) -> None:
    _batch(tmp_path, 1, {0: 60, 1: 134})
    assert not checkpoint_is_caught_up(tmp_path, TOPIC, ends)


def test_an_uncommitted_batch_must_be_replayed(tmp_path: Path) -> None:
    _batch(tmp_path, 0, {0: 5})
    _batch(tmp_path, 1, {0: 60}, committed=False)
    assert not checkpoint_is_caught_up(tmp_path, TOPIC, {0: 60})


def test_no_checkpoint_or_an_unreadable_one_needs_the_stream(tmp_path: Path) -> None:
    assert not checkpoint_is_caught_up(tmp_path / "none", TOPIC, {0: 1})
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    (tmp_path / "offsets" / "0").write_text("v1\n{}\nnot json")
    (tmp_path / "commits" / "0").write_text("v1")
    assert not checkpoint_is_caught_up(tmp_path, TOPIC, {0: 1})
