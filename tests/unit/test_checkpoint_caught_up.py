"""When the drain task may skip Spark, and which JIT a drain's driver gets: read from a
checkpoint laid out as Spark writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aqi.core.config import STREAM_QUICK_JIT_MAX_BACKLOG
from aqi.core.errors import AqiError
from spark_streaming.job import (
    StreamOptions,
    checkpoint_is_caught_up,
    checkpoint_offsets,
    choose_jit,
)

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


def test_checkpoint_offsets_are_the_last_committed_batch_ends(tmp_path: Path) -> None:
    assert checkpoint_offsets(tmp_path / "none", TOPIC) is None
    _batch(tmp_path, 0, {0: 5, 1: 7})
    _batch(tmp_path, 1, {0: 60, 1: 134})
    assert checkpoint_offsets(tmp_path, TOPIC) == {0: 60, 1: 134}
    assert checkpoint_offsets(tmp_path, "other.topic") == {}
    _batch(tmp_path, 2, {0: 70, 1: 140}, committed=False)  # to be replayed: not known done
    assert checkpoint_offsets(tmp_path, TOPIC) is None


def _options(checkpoint: Path, **kw) -> StreamOptions:
    return StreamOptions(bootstrap_servers="127.0.0.1:9", topic=TOPIC,
                         database_url="postgresql://u@127.0.0.1:9/d", bronze_path="b",
                         checkpoint_dir=checkpoint, **kw)  # fmt: skip


def test_auto_gives_a_small_drain_the_quick_jit_counting_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    limit = STREAM_QUICK_JIT_MAX_BACKLOG
    drain = _options(tmp_path, available_now=True)
    # no checkpoint: the whole topic is the backlog
    assert choose_jit(drain, {0: limit // 2, 1: limit - limit // 2}) == (
        True, f"a drain of {limit:,} records (<= {limit:,})")  # fmt: skip
    assert choose_jit(drain, {0: limit // 2, 1: limit - limit // 2 + 1})[0] is False
    # from the checkpoint's last committed batch on
    _batch(tmp_path, 0, {0: 1_000_000, 1: 2_000_000})
    quick, why = choose_jit(drain, {0: 1_000_500, 1: 2_000_000, 2: 30})
    assert quick and why.startswith("a drain of 530 records")
    assert choose_jit(drain, {0: 1_000_000 + limit + 1, 1: 2_000_000}) == (
        False, f"a drain of {limit + 1:,} records (> {limit:,})")  # fmt: skip


def test_a_continuous_stream_gets_the_full_jit_and_the_option_wins(tmp_path: Path) -> None:
    assert choose_jit(_options(tmp_path), {0: 10}) == (False, "a continuous stream")
    big = {0: STREAM_QUICK_JIT_MAX_BACKLOG * 10}
    assert choose_jit(_options(tmp_path, jit="quick"), big) == (True, "--jit quick")
    assert choose_jit(_options(tmp_path, available_now=True, jit="full"), {0: 1}) == (
        False, "--jit full")  # fmt: skip
    with pytest.raises(AqiError, match="--jit: expected one of auto, quick, full"):
        choose_jit(_options(tmp_path, jit="fast"), {0: 1})


def test_a_drain_whose_backlog_is_unknown_gets_the_full_jit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aqi.core.topics import KafkaUnavailable
    from spark_streaming import job

    def unreachable(bootstrap: str, topic: str) -> dict[int, int]:
        raise KafkaUnavailable(f"no end offsets for {topic} from {bootstrap}")

    monkeypatch.setattr(job, "end_offsets", unreachable)
    assert choose_jit(_options(tmp_path, available_now=True)) == (False, "the backlog is unknown")
