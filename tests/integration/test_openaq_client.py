"""The OpenAQ client against the mock API, through real HTTP on 127.0.0.1.

Every test builds the client directly, with a private rate-limit state and cache under
``tmp_path`` and short timeouts/backoffs/pauses so that the whole file runs in seconds.
What is asserted is what the mock saw (``mock.requests``): how many requests, with which
query, at what time - not what the client says it did.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import FakeClock

from ingestion.openaq_client import (
    MAX_LIMIT,
    OpenAQAuthError,
    OpenAQClient,
    OpenAQError,
    OpenAQGoneError,
    Page,
)
from ingestion.rate_limit import RateLimiter
from openaq_mock.api import MockOpenAQ

pytestmark = pytest.mark.integration

KEY = "test-key-7f3c9e1a5b2d"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SENSOR = 990_001  # not in the recorded fixtures: only generated measurements
ALBUQUERQUE_BBOX = (-107.0, 35.0, -106.0, 36.0)  # minx (lon), miny (lat), maxx, maxy
DEL_NORTE = (35.1353, -106.5847)  # latitude, longitude of location 2178
POLICY_403 = {"message": "Forbidden: violation of rate limit policy"}


@pytest.fixture
def mock() -> Iterator[MockOpenAQ]:
    with MockOpenAQ() as server:
        yield server


def make_client(
    mock: MockOpenAQ,
    tmp_path: Path,
    *,
    api_key: str | None = KEY,
    base_url: str | None = None,
    limiter: RateLimiter | None = None,
    per_minute: int = 600,
    per_hour: int = 10_000,
    **options: Any,
) -> OpenAQClient:
    """A client for the mock with fast settings; ``options`` override the defaults below."""
    settings: dict[str, Any] = {
        "cache_dir": tmp_path / "cache",
        "timeout_s": 2.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "policy_pause_s": 0.3,
    }
    settings.update(options)
    if limiter is None:
        limiter = RateLimiter(tmp_path, "id", per_minute=per_minute, per_hour=per_hour)
    return OpenAQClient(base_url or mock.base_url, api_key, limiter, **settings)


def end_of(result: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(result["period"]["datetimeTo"]["utc"])


def ids(locations: Iterator[dict[str, Any]]) -> list[int]:
    return [location["id"] for location in locations]


def gaps_after(mock: MockOpenAQ, status: int) -> list[float]:
    """Seconds between each request answered ``status`` and the request that followed it."""
    log = mock.requests
    return [
        log[i + 1].monotonic_time - log[i].monotonic_time
        for i in range(len(log) - 1)
        if log[i].status == status
    ]


# -- 1. paging -------------------------------------------------------------------------------


def test_measurements_are_paged_by_1000_until_a_short_page(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    generated = mock.generate_measurements(SENSOR, T0, 2600)
    # the window's edges are exact period ends: #49 must be left out, #2549 kept
    since, until = end_of(generated[49]), end_of(generated[2549])
    expected = [r["period"]["datetimeTo"]["utc"] for r in generated if since < end_of(r) <= until]
    assert len(expected) == 2500
    client = make_client(mock, tmp_path)

    # the upper bound in another zone: the client must send the same instant in UTC
    pages = list(client.measurements(SENSOR, since, until.astimezone(timezone(timedelta(hours=2)))))

    assert [p.number for p in pages] == [1, 2, 3]
    assert [len(p.results) for p in pages] == [1000, 1000, 500]
    assert [p.limit for p in pages] == [1000, 1000, 1000]
    assert [p.found for p in pages] == [">1000", ">1000", 500]
    assert [p.is_last for p in pages] == [False, False, True]
    got = [r["period"]["datetimeTo"]["utc"] for p in pages for r in p.results]
    assert got == expected
    moments = [datetime.fromisoformat(s) for s in got]
    assert len(set(moments)) == 2500
    assert all(a < b for a, b in pairwise(moments)), "ascending"
    assert moments[0] == end_of(generated[50]), "datetime_from is exclusive"
    assert moments[-1] == until, "datetime_to is inclusive"

    log = [r for r in mock.requests if r.path == f"/v3/sensors/{SENSOR}/measurements"]
    assert len(log) == len(mock.requests) == 3
    assert [(r.query["page"], r.query["limit"]) for r in log] == [
        ("1", "1000"),
        ("2", "1000"),
        ("3", "1000"),
    ]
    assert {r.query["datetime_from"] for r in log} == {"2024-01-03T02:00:00Z"}
    assert {r.query["datetime_to"] for r in log} == {"2024-04-16T06:00:00Z"}
    assert {r.status for r in log} == {200}


def test_measurements_with_a_small_limit_and_a_first_page(mock: MockOpenAQ, tmp_path: Path) -> None:
    generated = mock.generate_measurements(SENSOR, T0, 25)
    client = make_client(mock, tmp_path)
    window = (T0, end_of(generated[-1]))

    pages = list(client.measurements(SENSOR, *window, limit=10, first_page=2))

    assert [(p.number, len(p.results)) for p in pages] == [(2, 10), (3, 5)]
    got = [r["period"]["datetimeTo"]["utc"] for p in pages for r in p.results]
    assert got == [r["period"]["datetimeTo"]["utc"] for r in generated[10:]]
    assert [r.query["page"] for r in mock.requests] == ["2", "3"]


def test_an_exactly_full_last_page_costs_one_empty_request(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    generated = mock.generate_measurements(SENSOR, T0, 20)
    client = make_client(mock, tmp_path)

    pages = list(client.measurements(SENSOR, T0, end_of(generated[-1]), limit=10))

    assert [len(p.results) for p in pages] == [10, 10, 0]
    assert len(mock.requests) == 3


# -- 2. locations and the location cache ------------------------------------------------


def test_locations_by_bbox_iso_and_radius(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)

    in_bbox = list(client.locations(bbox=ALBUQUERQUE_BBOX))
    assert ids(in_bbox) == [2178]
    assert in_bbox[0]["name"] == "Del Norte"
    assert ids(client.locations(iso="IN")) == [6, 13, 17]
    near = list(client.locations(coordinates=DEL_NORTE, radius_m=1000))
    assert ids(near) == [2178] and near[0]["distance"] < 10
    assert ids(client.locations(iso="GH")) == []
    assert ids(client.locations(bbox=(76.5, 28.3, 77.5, 29.0))) == [13, 17]

    queries = [r.query for r in mock.requests]
    assert [r.path for r in mock.requests] == ["/v3/locations"] * 5, "one page each"
    assert queries[0] == {"bbox": "-107,35,-106,36", "limit": "1000", "page": "1"}
    assert queries[1]["iso"] == "IN"
    assert queries[2]["coordinates"] == "35.1353,-106.5847" and queries[2]["radius"] == "1000"
    assert "bbox" not in queries[2]


def test_location_is_cached_in_memory_and_on_disk(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)

    first = client.location(2178)
    assert first["id"] == 2178 and first["name"] == "Del Norte"
    assert [r.path for r in mock.requests] == ["/v3/locations/2178"]

    assert client.location(2178) == first
    assert len(mock.requests) == 1, "the second call is answered from memory"

    other = make_client(mock, tmp_path)  # e.g. the next run of the collector
    assert other.location(2178) == first
    assert len(mock.requests) == 1, "a new client reads the disk cache"

    uncached = make_client(mock, tmp_path, cache_dir=None)
    assert uncached.location(2178) == first
    assert len(mock.requests) == 2, "without a cache_dir the API is asked"


def test_listed_locations_are_cached_and_stale_cache_is_refreshed(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    client = make_client(mock, tmp_path)
    listed = {loc["id"]: loc for loc in client.locations(iso="IN")}
    assert len(mock.requests) == 1

    assert client.location(17) == listed[17]
    assert make_client(mock, tmp_path).location(13) == listed[13]
    assert len(mock.requests) == 1, "locations() fills the cache"

    cached = tmp_path / "cache" / "location-17.json"
    day_ago = time.time() - 25 * 3600
    os.utime(cached, (day_ago, day_ago))
    assert make_client(mock, tmp_path).location(17)["id"] == 17
    assert [r.path for r in mock.requests][1:] == ["/v3/locations/17"], "older than 24 h"


def test_unknown_location_is_an_openaq_error(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)
    with pytest.raises(OpenAQError, match="404"):
        client.location(999_999)
    assert len(mock.requests) == 1, "a 404 is not retried"


# -- 3. sensors and latest ----------------------------------------------------------------


def test_sensors_and_latest(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)

    sensors = client.sensors(2178)
    assert len(sensors) == 8
    sensor_ids = {s["id"] for s in sensors}
    assert 3917 in sensor_ids and all(s["parameter"]["id"] for s in sensors)

    latest = client.latest_for_location(2178)
    assert latest
    assert {r["locationsId"] for r in latest} == {2178}
    assert {r["sensorsId"] for r in latest} <= sensor_ids
    assert all(r["datetime"]["utc"] for r in latest)

    pm25 = list(client.latest_for_parameter(2))
    assert pm25 and all("value" in r and r["sensorsId"] for r in pm25)
    assert len({r["sensorsId"] for r in pm25}) == len(pm25), "one record per sensor"

    assert [r.path for r in mock.requests] == [
        "/v3/locations/2178/sensors",
        "/v3/locations/2178/latest",
        "/v3/parameters/2/latest",
    ]
    assert {r.query["limit"] for r in mock.requests} == {"1000"}


# -- 4. 401 --------------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", ["wrong-key-0c4f1e", None])
def test_401_is_an_auth_error_at_once(tmp_path: Path, api_key: str | None) -> None:
    with MockOpenAQ(api_key="right") as mock:
        client = make_client(mock, tmp_path, api_key=api_key)
        with pytest.raises(OpenAQAuthError) as info:
            client.get("/locations/2178")
        log = mock.requests
    message = str(info.value)
    assert "OPENAQ_API_KEY" in message
    assert "401" in message
    if api_key is not None:
        assert api_key not in message and api_key not in repr(info.value)
    assert isinstance(info.value, OpenAQError)
    assert [r.status for r in log] == [401], "no retry"
    assert log[0].api_key_present is (api_key is not None)


def test_the_right_key_is_sent_in_the_header(tmp_path: Path) -> None:
    with MockOpenAQ(api_key="right") as mock:
        client = make_client(mock, tmp_path, api_key="right")
        assert client.get("/locations/2178")["results"][0]["id"] == 2178
        log = mock.requests
    assert [r.status for r in log] == [200]
    assert "right" not in repr(log[0].query), "the key is not a query parameter"


# -- 5. 410 --------------------------------------------------------------------------------


def test_410_for_a_v2_path_is_a_gone_error(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)
    with pytest.raises(OpenAQGoneError, match="410"):
        client.get("/../v2/locations")
    assert [(r.path, r.status) for r in mock.requests] == [("/v2/locations", 410)]


def test_a_v2_base_url_is_a_gone_error(mock: MockOpenAQ, tmp_path: Path) -> None:
    v2 = mock.base_url.removesuffix("/v3") + "/v2/"
    client = make_client(mock, tmp_path, base_url=v2)
    with pytest.raises(OpenAQGoneError) as info:
        list(client.locations(iso="US"))
    assert "/locations" in str(info.value) and "v3" in str(info.value)
    assert [(r.path, r.status) for r in mock.requests] == [("/v2/locations", 410)], "no retry"


# -- 6. 429 ----------------------------------------------------------------------------------


def test_periodic_429s_are_waited_out(tmp_path: Path) -> None:
    with MockOpenAQ(fail_with_429_every=3, reset_after_429=1) as mock:
        client = make_client(mock, tmp_path)
        started = time.monotonic()
        for _ in range(6):  # 8 requests: the 3rd and the 6th are answered 429
            assert client.get("/locations/2178")["results"][0]["id"] == 2178
        elapsed = time.monotonic() - started
        log = mock.requests
        violations = mock.requests_before_reset()
    assert [r.status for r in log] == [200, 200, 429] * 2 + [200, 200]
    assert violations == 0, "nothing was sent before a 429's reset had passed"
    resets = 2 * 1.0
    assert elapsed >= resets
    assert all(gap >= 1.0 for gap in gaps_after(mock, 429))


def test_a_429_pauses_every_client_sharing_the_budget(tmp_path: Path) -> None:
    class Interrupted(Exception):
        pass

    def interrupt(seconds: float) -> None:
        raise Interrupted

    with MockOpenAQ(fail_with_429_every=1, reset_after_429=1) as mock:
        # client A gets a 429 and is stopped while it waits (think: a killed process)
        a = make_client(mock, tmp_path, limiter=RateLimiter(tmp_path, "id", sleep=interrupt))
        with pytest.raises(Interrupted):
            a.get("/locations/2178")
        mock.set_fail_with_429_every(None)
        # client B, another process with the same key, must still honour A's reset
        waits: list[str] = []
        limiter_b = RateLimiter(tmp_path, "id", on_wait=lambda s, why: waits.append(why))
        b = make_client(mock, tmp_path, limiter=limiter_b)
        assert b.get("/locations/2178")["results"][0]["id"] == 2178
        violations = mock.requests_before_reset()
    assert [r.status for r in mock.requests] == [429, 200]
    assert violations == 0
    assert gaps_after(mock, 429)[0] >= 1.0
    assert waits and "reset" in waits[0]


def test_too_many_429s_end_in_an_openaq_error(tmp_path: Path) -> None:
    with MockOpenAQ(fail_with_429_every=1, reset_after_429=1) as mock:
        client = make_client(mock, tmp_path, max_rate_limit_waits=0)
        with pytest.raises(OpenAQError, match="rate-limited"):
            client.get("/locations/2178")
        assert [r.status for r in mock.requests] == [429]


def test_giving_up_on_a_429_still_records_its_reset(tmp_path: Path) -> None:
    with MockOpenAQ(fail_with_429_every=1, reset_after_429=1) as mock:
        client = make_client(mock, tmp_path, max_rate_limit_waits=0)
        with pytest.raises(OpenAQError):
            client.get("/locations/2178")
        with pytest.raises(OpenAQError):
            make_client(mock, tmp_path, max_rate_limit_waits=0).get("/locations/2178")
        violations = mock.requests_before_reset()
    assert violations == 0


# -- 7. transient failures ----------------------------------------------------------------


def test_a_500_a_timeout_malformed_json_and_a_cut_body_are_retried(mock: MockOpenAQ, tmp_path: Path) -> None:
    waits: list[str] = []
    client = make_client(mock, tmp_path, timeout_s=0.3, on_wait=lambda s, why: waits.append(why))
    mock.inject(500)
    mock.inject(delay=1.5)
    mock.inject(malformed=True)
    mock.inject(cut=True)

    body = client.get("/locations/2178")

    assert body["results"][0]["name"] == "Del Norte"
    log = mock.requests
    assert len(log) == 5, "four retries"
    assert [r.path for r in log] == ["/v3/locations/2178"] * 5
    # a delayed, a truncated and a cut 200
    assert [r.status for r in log] == [500, 200, 200, 200, 200]
    assert len(waits) == 4
    assert "500" in waits[0] and "Timeout" in waits[1] and "malformed JSON" in waits[2]
    assert "ChunkedEncodingError" in waits[3]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 503}, id="503"),
        pytest.param({"delay": 0.5}, id="timeout"),
        pytest.param({"malformed": True}, id="malformed-json"),
        pytest.param({"cut": True}, id="body-cut-mid-way"),
        pytest.param({"status": 200, "body": [1, 2]}, id="json-not-an-object"),
    ],
)
def test_giving_up_after_max_retries_is_an_openaq_error(
    mock: MockOpenAQ, tmp_path: Path, fault: dict[str, Any]
) -> None:
    client = make_client(mock, tmp_path, timeout_s=0.1, max_retries=2)
    mock.inject(**fault, times=3)

    with pytest.raises(OpenAQError, match="2 retries failed") as info:
        client.get("/locations/2178")

    assert not isinstance(info.value, requests.RequestException)
    assert len(mock.requests) == 3, "the first try and max_retries retries"
    assert client.get("/locations/2178")["results"][0]["id"] == 2178, "usable afterwards"


def test_connection_refused_is_retried_then_an_openaq_error(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[str] = []
    client = make_client(
        mock,
        tmp_path,
        base_url=f"http://127.0.0.1:{port}/v3",
        max_retries=2,
        on_wait=lambda s, why: waits.append(why),
    )
    with pytest.raises(OpenAQError, match="ConnectionError") as info:
        client.get("/locations")
    assert not isinstance(info.value, requests.RequestException)
    assert len(waits) == 2


def test_other_client_errors_are_not_retried(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)
    with pytest.raises(OpenAQError, match="422"):
        client.get("/locations", {"bbox": "1,2,3"})
    assert len(mock.requests) == 1


def test_an_error_with_a_non_object_json_body_is_an_openaq_error(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    client = make_client(mock, tmp_path)
    mock.inject(400, body=["not", "an", "object"])
    with pytest.raises(OpenAQError, match="400"):
        client.get("/locations")


# -- 8. 403 rate-limit policy ---------------------------------------------------------------


def test_403_rate_limit_policy_pauses_then_retries(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path, policy_pause_s=0.3)
    mock.inject(403, body=POLICY_403)

    started = time.monotonic()
    assert client.get("/locations/2178")["results"][0]["id"] == 2178
    elapsed = time.monotonic() - started

    assert [r.status for r in mock.requests] == [403, 200]
    (gap,) = gaps_after(mock, 403)
    assert 0.3 <= gap < 2.0, "about policy_pause_s (plus a little jitter)"
    assert elapsed < 3.0


def test_any_other_403_is_an_error(mock: MockOpenAQ, tmp_path: Path) -> None:
    client = make_client(mock, tmp_path)
    mock.inject(403, body={"detail": "Forbidden"})
    with pytest.raises(OpenAQError, match="403"):
        client.get("/locations/2178")
    assert len(mock.requests) == 1


# -- 9. x-ratelimit-remaining: 0 ------------------------------------------------------------


def test_remaining_zero_makes_the_next_request_wait_for_the_reset(
    mock: MockOpenAQ, tmp_path: Path
) -> None:
    waits: list[str] = []
    limiter = RateLimiter(tmp_path, "id", on_wait=lambda s, why: waits.append(why))
    client = make_client(mock, tmp_path, limiter=limiter)
    # a tiny delay keeps the real body; the fault only overrides the headers
    mock.inject(delay=0.01, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"})

    first = client.get("/locations/2178")
    assert first["results"][0]["id"] == 2178, "a 200 with remaining 0 is still an answer"
    assert client.get("/locations/2178")["results"][0]["id"] == 2178

    log = mock.requests
    assert [r.status for r in log] == [200, 200]
    assert log[1].monotonic_time - log[0].monotonic_time >= 1.0
    assert len(waits) == 1 and "reset" in waits[0]


@pytest.mark.parametrize(("reset", "expected"), [
    ("30", 30.0), ("1e12", 3600.0), ("inf", None), ("nan", None), ("soon", None), ("-5", None),
])  # fmt: skip
def test_a_reset_header_pauses_at_most_an_hour_and_only_if_it_is_a_number(
    mock: MockOpenAQ, tmp_path: Path, reset: str, expected: float | None
) -> None:
    clock = FakeClock()
    waits: list[float] = []
    limiter = RateLimiter(tmp_path, "id", clock=clock, sleep=clock.sleep,
                          on_wait=lambda s, why: waits.append(s))  # fmt: skip
    client = make_client(mock, tmp_path, limiter=limiter)
    mock.inject(delay=0.01, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    client.get("/locations/2178")
    client.get("/locations/2178")
    if expected is None:  # nothing to wait for (a negative reset has passed already)
        assert waits == []
    else:
        assert waits == [pytest.approx(expected)]


def test_the_mocks_own_quota_is_never_exceeded(tmp_path: Path) -> None:
    with MockOpenAQ(per_minute=2, window_seconds=1.0) as mock:
        waits: list[str] = []
        limiter = RateLimiter(tmp_path, "id", on_wait=lambda s, why: waits.append(why))
        client = make_client(mock, tmp_path, limiter=limiter)
        for _ in range(4):
            assert client.get("/locations/2178")["results"][0]["id"] == 2178
        log = mock.requests
        violations = mock.requests_before_reset()
    assert [r.status for r in log] == [200] * 4, "remaining 0 was obeyed: no 429"
    assert violations == 0
    assert waits, "at least one wait for the window to reset"


# -- 10. the sliding window ---------------------------------------------------------------------


def test_sliding_window_allows_5_then_waits_before_the_6th(tmp_path: Path) -> None:
    with MockOpenAQ(window_seconds=60.0) as mock:
        clock = FakeClock(time.time())
        waits: list[tuple[float, str, int]] = []

        def on_wait(seconds: float, why: str) -> None:
            waits.append((seconds, why, len(mock.requests)))

        limiter = RateLimiter(
            tmp_path,
            "id",
            per_minute=5,
            per_hour=100,
            clock=clock,
            sleep=clock.sleep,
            on_wait=on_wait,
        )
        client = make_client(mock, tmp_path, limiter=limiter)
        started = time.monotonic()

        for _ in range(5):
            assert client.get("/locations/2178")["results"][0]["id"] == 2178
        assert waits == [] and clock.slept == [], "the first 5 go through at once"
        assert len(mock.requests) == 5

        assert client.get("/locations/2178")["results"][0]["id"] == 2178
        log = mock.requests

    assert len(waits) == 1
    seconds, why, sent_before = waits[0]
    assert sent_before == 5, "on_wait is called before the 6th request is sent"
    assert seconds == pytest.approx(60.0, abs=0.05)
    assert "5 requests/minute" in why
    assert clock.slept == [seconds]
    assert [r.status for r in log] == [200] * 6
    assert time.monotonic() - started < 5, "the minute was simulated, not waited"


# -- 11. the key stays secret ---------------------------------------------------------------------


def test_the_key_never_appears_in_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-secret-9b8c7d6e5f4a3b2c"
    wrong = "sk-wrong-1a2b3c4d5e6f"
    errors: list[BaseException] = []
    with MockOpenAQ(api_key=secret) as mock:
        client = make_client(mock, tmp_path, api_key=secret, timeout_s=0.1, max_retries=1)
        assert client.location(2178)["id"] == 2178
        assert ids(client.locations(iso="IN")) == [6, 13, 17]
        mock.inject(500)
        assert client.get("/sensors/3917")["results"]
        mock.inject(malformed=True)
        assert client.get("/sensors/3917")["results"]
        mock.inject(delay=0.3, times=2)
        with pytest.raises(OpenAQError) as timed_out:
            client.get("/locations/2178")
        errors.append(timed_out.value)
        with pytest.raises(OpenAQError) as not_found:
            client.get("/locations/999999")
        errors.append(not_found.value)
        with pytest.raises(OpenAQGoneError) as gone:
            client.get("/../v2/locations")
        errors.append(gone.value)
        for key in (wrong, secret + "x"):
            with pytest.raises(OpenAQAuthError) as denied:
                make_client(mock, tmp_path, api_key=key).get("/locations/2178")
            errors.append(denied.value)

    records = caplog.records
    assert any(r.name.startswith("urllib3") for r in records), "urllib3 debug logs captured"
    assert any(r.name == "ingestion.openaq_client" for r in records), "retries were logged"
    for record in records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert secret not in text and wrong not in text, record.name
    assert secret not in caplog.text and wrong not in caplog.text
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            for text in (str(chain), repr(chain), repr(chain.args)):
                assert secret not in text and wrong not in text
            chain = chain.__cause__ or chain.__context__


# -- 12. pages and limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "limit", "last"),
    [(1000, 1000, False), (999, 1000, True), (0, 1000, True), (5, 5, False), (4, 5, True)],
)
def test_page_is_last_only_when_short(count: int, limit: int, last: bool) -> None:
    page = Page(1, limit, [{"n": i} for i in range(count)], ">1000")
    assert page.is_last is last


def test_found_is_not_trusted_to_end_paging() -> None:
    assert Page(2, 100, [{}] * 100, 100).is_last is False, "found == seen so far: still ask"
    assert Page(2, 100, [{}] * 3, ">1000").is_last is True


@pytest.mark.parametrize("limit", [MAX_LIMIT + 1, 5000, 0, -1])
def test_a_limit_outside_1_to_1000_is_rejected(
    mock: MockOpenAQ, tmp_path: Path, limit: int
) -> None:
    assert MAX_LIMIT == 1000
    client = make_client(mock, tmp_path)
    with pytest.raises(ValueError, match="limit"):
        next(client.measurements(SENSOR, T0, T0 + timedelta(days=1), limit=limit))
    with pytest.raises(ValueError, match="limit"):
        list(client.locations(iso="US", limit=limit))
    with pytest.raises(ValueError, match="limit"):
        next(client.pages("/locations", limit=limit))
    assert mock.requests == [], "rejected before any request"
