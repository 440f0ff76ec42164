"""``aqi backfill``: every measurement of every sensor of some locations, resumably.

For each sensor the time range is cut into windows of at most a year (the API's limit on
one query), each window read page by page. Pages are sent pipelined (the next one is read
while Kafka acknowledges the last); once Kafka acknowledged a page and every one before it,
the sensor's checkpoint moves to the period end of the page's last measurement; a rerun with
the same arguments asks for ``datetime_from = checkpoint`` (the API filters ``from < period
end``), so a crash costs at most the pages that were in flight, sent again.

Public surface: :func:`run_backfill`, :func:`year_windows`, :class:`BackfillResult`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from ingestion.events import (
    Location,
    event_from_measurement,
    format_utc,
    location_from_api,
    parse_utc,
)
from ingestion.openaq_client import OpenAQClient
from ingestion.producer import EventProducer
from ingestion.progress import Progress
from ingestion.state import IngestionState, backfill_job_id

__all__ = ["MAX_WINDOW", "BackfillResult", "run_backfill", "year_windows"]

#: the longest time range one measurements query may span
MAX_WINDOW = timedelta(days=365)


@dataclass(frozen=True)
class BackfillResult:
    job_id: str
    resumed: bool
    sensors: int
    events_sent: int


def year_windows(
    since: datetime, until: datetime, size: timedelta = MAX_WINDOW
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive (from, to] windows of at most ``size`` covering (since, until]."""
    start = since
    while start < until:
        end = min(start + size, until)
        yield start, end
        start = end


def run_backfill(
    location_ids: Sequence[int],
    since: datetime,
    until: datetime,
    *,
    client: OpenAQClient,
    producer: EventProducer,
    state: IngestionState,
    progress: Progress,
) -> BackfillResult:
    """Send every measurement with ``since < period end <= until``; resume a killed run."""
    if since >= until:
        raise ValueError("--since must be before --until")
    job_id = backfill_job_id(location_ids, since, until)
    spec = {
        "locations": sorted(set(location_ids)),
        "since": format_utc(since),
        "until": format_utc(until),
    }
    resumed = not state.start_job(job_id, spec)
    locations = [location_from_api(client.location(i)) for i in dict.fromkeys(location_ids)]
    sensors = [(loc, sensor) for loc in locations for sensor in loc.sensors.values()]
    progress.total = len(sensors)
    if resumed:
        progress.note(f"resuming job {job_id}")
    sent = 0
    for location, sensor in sensors:
        done_until, finished, _ = state.progress(job_id, sensor.id)
        if finished:
            progress.advance()
            continue
        start = max(since, done_until) if done_until else since
        for window_from, window_to in year_windows(start, until):
            progress.note(
                f"sensor {sensor.id} ({sensor.parameter}) @ {location.id}: "
                f"{window_from:%Y-%m-%d} .. {window_to:%Y-%m-%d}"
            )
            sent += _backfill_window(
                job_id, location, sensor.id, window_from, window_to,
                client=client, producer=producer, state=state, progress=progress,
            )  # fmt: skip
        # a barrier: the sensor is finished once Kafka has every event sent for it
        producer.send([], then=partial(
            state.advance, job_id, sensor.id, location.id, done_until=until, events=0,
            finished=True,
        ))  # fmt: skip
        progress.advance()
    producer.flush()
    return BackfillResult(job_id=job_id, resumed=resumed, sensors=len(sensors), events_sent=sent)


def _backfill_window(
    job_id: str,
    location: Location,
    sensor_id: int,
    window_from: datetime,
    window_to: datetime,
    *,
    client: OpenAQClient,
    producer: EventProducer,
    state: IngestionState,
    progress: Progress,
) -> int:
    sensor = location.sensors[sensor_id]
    sent = 0
    for page in client.measurements(sensor_id, window_from, window_to):
        events = [event_from_measurement(r, location, sensor, "backfill") for r in page.results]
        if events:
            last_end = max(parse_utc(e["period_end"]) for e in events)
            # the checkpoint moves only once Kafka acknowledged the page (and all before it)
            producer.send(events, then=partial(
                state.advance, job_id, sensor_id, location.id, done_until=last_end,
                events=len(events),
            ))  # fmt: skip
            sent += len(events)
            progress.add_events(len(events))
    # the window is complete even if its tail held no data: never ask for it again
    producer.send([], then=partial(
        state.advance, job_id, sensor_id, location.id, done_until=window_to, events=0
    ))  # fmt: skip
    return sent
