"""The mock OpenAQ server, exercised through real HTTP: data, paging, errors, limits, faults."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from ingestion.fixtures import load_recorded
from openaq_mock.api import MockOpenAQ, main
from openaq_mock.clock import VirtualClock

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def mock() -> Iterator[MockOpenAQ]:
    with MockOpenAQ() as server:
        yield server


def get(mock: MockOpenAQ, path: str, key: str | None = None, **params: Any) -> requests.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.get(mock.base_url + path, params=params, headers=headers, timeout=5)


def location(
    location_id: int, lat: float, lon: float, *, code: str = "FR", tz: str = "Europe/Paris"
) -> dict:
    """A minimal OpenAQ-shaped location with one PM2.5 sensor (id = location id x 10)."""
    return {
        "id": location_id,
        "name": f"site {location_id}",
        "timezone": tz,
        "country": {"id": 22, "code": code, "name": code},
        "provider": {"id": 1, "name": "test"},
        "isMobile": False,
        "isMonitor": True,
        "coordinates": {"latitude": lat, "longitude": lon},
        "sensors": [
            {
                "id": location_id * 10,
                "name": "pm25 µg/m³",
                "parameter": {"id": 2, "name": "pm25", "units": "µg/m³", "displayName": "PM2.5"},
            }
        ],
    }


def ends(response: requests.Response) -> list[str]:
    return [r["period"]["datetimeTo"]["utc"] for r in response.json()["results"]]


# -- recorded data --------------------------------------------------------------------------


def test_serves_a_recorded_location_in_the_real_envelope(mock: MockOpenAQ) -> None:
    assert mock.base_url == f"http://127.0.0.1:{mock.port}/v3"
    response = get(mock, "/locations/2178")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["meta"] == {
        "name": "openaq-api",
        "website": "/",
        "page": 1,
        "limit": 100,
        "found": 1,
    }
    assert body["results"][0]["name"] == "Del Norte"
    assert len(body["results"][0]["sensors"]) == 8


def test_replays_recorded_measurements_exactly(mock: MockOpenAQ) -> None:
    recorded = next(
        r for r in load_recorded() if r.source.endswith("list_sensor_measurements_3.yml")
    )
    response = get(mock, "/sensors/3/measurements", **recorded.query)
    assert response.json()["meta"]["found"] == 48
    assert response.json()["results"] == recorded.body["results"]
    five = get(mock, "/sensors/3/measurements", limit=5).json()
    assert five["meta"]["found"] == ">5", "uncounted like the real API"
    assert five["results"][0]["period"]["datetimeTo"]["utc"] == "2023-03-01T05:30:00Z"


def test_sensors_latest_and_parameters(mock: MockOpenAQ) -> None:
    sensors = get(mock, "/locations/2178/sensors").json()
    assert sensors["meta"]["found"] == 8
    assert all("coverage" in s for s in sensors["results"])
    latest = {r["sensorsId"]: r for r in get(mock, "/locations/2178/latest").json()["results"]}
    assert len(latest) == 8 and latest[3920]["value"] == 4.1
    assert latest[3920]["datetime"]["utc"] == "2024-08-26T20:00:00Z"
    assert latest[3920]["locationsId"] == 2178
    assert get(mock, "/locations/1/latest").json()["results"][0]["value"] == 8.15
    by_parameter = get(mock, "/parameters/2/latest", limit=5).json()
    assert len(by_parameter["results"]) == 5
    assert isinstance(by_parameter["meta"]["found"], int) and by_parameter["meta"]["found"] > 22
    assert get(mock, "/parameters/2").json()["results"][0]["name"] == "pm25"
    sensor = get(mock, "/sensors/3920").json()["results"][0]
    assert sensor["parameter"]["id"] == 2 and sensor["datetimeFirst"]["utc"].startswith("2016")


# -- paging and filters ----------------------------------------------------------------------


def test_pages_of_generated_measurements(mock: MockOpenAQ) -> None:
    mock.add_location(location(900, 48.85, 2.35))
    generated = mock.generate_measurements(9000, T0, 2500)
    pages = [
        get(mock, "/sensors/9000/measurements", limit=1000, page=p).json() for p in (1, 2, 3, 4)
    ]
    assert [len(p["results"]) for p in pages] == [1000, 1000, 500, 0]
    assert [p["meta"]["found"] for p in pages] == [">1000", ">1000", 500, 0]
    assert [p["meta"]["page"] for p in pages] == [1, 2, 3, 4]
    served = [r for p in pages for r in p["results"]]
    assert served == generated
    stamps = [r["period"]["datetimeTo"]["utc"] for r in served]
    assert stamps == sorted(stamps) and len(set(stamps)) == 2500


def test_datetime_filter_excludes_from_and_includes_to(mock: MockOpenAQ) -> None:
    mock.add_location(location(901, 48.85, 2.35))
    mock.generate_measurements(9010, T0, 10)  # period ends 01:00 .. 10:00 UTC
    response = get(
        mock,
        "/sensors/9010/measurements",
        datetime_from="2024-01-01T02:00:00Z",
        datetime_to="2024-01-01T05:00:00+00:00",
    )
    assert ends(response) == [
        "2024-01-01T03:00:00Z",
        "2024-01-01T04:00:00Z",
        "2024-01-01T05:00:00Z",
    ]
    # a naive time is the location's local time (Paris, UTC+1 in January)
    naive = get(mock, "/sensors/9010/measurements", datetime_from="2024-01-01T10:00:00")
    assert ends(naive) == ["2024-01-01T10:00:00Z"]
    assert get(mock, "/sensors/9010/measurements", datetime_to="nonsense").status_code == 422


def test_locations_paging_and_filters(mock: MockOpenAQ) -> None:
    everything = get(mock, "/locations").json()
    assert everything["meta"]["found"] == 10
    ids = [loc["id"] for loc in everything["results"]]
    assert ids == sorted(ids)
    pages = [get(mock, "/locations", limit=4, page=p).json()["results"] for p in (1, 2, 3)]
    assert [len(p) for p in pages] == [4, 4, 2]
    assert [loc["id"] for p in pages for loc in p] == ids

    def found(**params: Any) -> list[int]:
        response = get(mock, "/locations", **params)
        assert response.status_code == 200, response.text
        return [loc["id"] for loc in response.json()["results"]]

    assert found(bbox="-107,35,-106,36") == [2178]
    assert found(bbox="76.5,28.3,77.5,29") == [13, 17]
    assert found(iso="IN") == [6, 13, 17]
    assert found(iso="US") == [2, 3, 7, 2178]
    assert found(countries_id="13") == [2178], "production's id for the US"
    assert found(countries_id="155,79") == [2, 3, 4, 7], "the test database's ids"
    assert found(iso="GH") == []
    near = get(mock, "/locations", coordinates="35.1353,-106.5847", radius=1000).json()["results"]
    assert [loc["id"] for loc in near] == [2178] and near[0]["distance"] < 10
    mock.add_location(location(902, 48.85, 2.35))
    assert found(iso="FR") == [902]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 1001},
        {"limit": 0},
        {"page": 0},
        {"limit": "ten"},
        {"bbox": "1,2,3"},
        {"bbox": "10,0,5,1"},
        {"bbox": "0,0,1,1", "coordinates": "0.5,0.5", "radius": 100},
        {"coordinates": "0,0"},
        {"coordinates": "0,0", "radius": 25001},
        {"iso": "US", "countries_id": "13"},
    ],
)
def test_invalid_queries_get_422(mock: MockOpenAQ, params: dict[str, Any]) -> None:
    response = get(mock, "/locations", **params)
    assert response.status_code == 422
    assert "detail" in response.json()


def test_limit_of_1000_is_allowed_and_validation_errors_look_like_fastapi(mock: MockOpenAQ) -> None:
    assert get(mock, "/sensors/3/measurements", limit=1000).status_code == 200
    detail = get(mock, "/sensors/3/measurements", limit=1001).json()["detail"]
    assert detail[0]["loc"] == ["query", "limit"] and detail[0]["type"] == "less_than_equal"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v3/nothing-here", 404),
        ("GET", "/v3/locations/999999", 404),
        ("GET", "/v3/locations/999999/latest", 404),
        ("GET", "/v3/sensors/999999", 404),
        ("GET", "/v3/sensors/999999/measurements", 404),
        ("GET", "/v3/parameters/999999/latest", 404),
        ("GET", "/v3/locations/abc", 422),
        ("GET", "/v2/locations", 410),
        ("GET", "/v1/latest", 410),
        ("POST", "/v3/locations", 405),
    ],
)
def test_error_statuses(mock: MockOpenAQ, method: str, path: str, status: int) -> None:
    url = f"http://127.0.0.1:{mock.port}{path}"
    response = requests.request(method, url, timeout=5)
    assert response.status_code == status
    assert response.json()["detail"]


def test_gone_explains_the_retirement(mock: MockOpenAQ) -> None:
    response = requests.get(f"http://127.0.0.1:{mock.port}/v2/measurements", timeout=5)
    assert response.status_code == 410 and "v3" in response.json()["detail"].lower()


# -- programmatic data ---------------------------------------------------------------------


def test_generated_measurements_are_deterministic_and_openaq_shaped() -> None:
    with MockOpenAQ(None) as first, MockOpenAQ(None) as second:
        first.add_location(location(903, 40.7, -74.0, code="US", tz="America/New_York"))
        a = first.generate_measurements(9030, T0, 24, interval=timedelta(minutes=30))
        b = second.generate_measurements(9030, T0, 24, interval=timedelta(minutes=30))
        c = second.generate_measurements(9031, T0, 24, seed=1)
    assert [r["value"] for r in a] == [r["value"] for r in b]
    assert [r["value"] for r in a] != [r["value"] for r in c]
    result = a[0]
    assert set(result) == {
        "value",
        "flagInfo",
        "parameter",
        "period",
        "coordinates",
        "summary",
        "coverage",
    }
    assert result["period"]["interval"] == "00:30:00" and result["period"]["label"] == "raw"
    assert result["period"]["datetimeFrom"] == {
        "utc": "2024-01-01T00:00:00Z",
        "local": "2023-12-31T19:00:00-05:00",
    }
    assert result["period"]["datetimeTo"]["utc"] == "2024-01-01T00:30:00Z"
    assert b[0]["period"]["datetimeTo"]["local"] == "2024-01-01T00:30:00+00:00", (
        "unknown location: UTC"
    )
    assert result["coverage"]["percentComplete"] == 100.0
    assert result["parameter"] == {"id": 2, "name": "pm25", "units": "µg/m³", "displayName": None}
    assert all(r["value"] >= 0 for r in a + c)
    with pytest.raises(ValueError):
        first.generate_measurements(1, datetime(2024, 1, 1), 1)


def test_latest_follows_the_newest_measurement(mock: MockOpenAQ) -> None:
    mock.add_location(location(904, 48.85, 2.35))
    mock.generate_measurements(9040, T0, 5)
    replacement = get(mock, "/sensors/9040/measurements").json()["results"][-1]
    replacement["value"] = 99.5
    mock.add_measurements(9040, [replacement])
    assert len(get(mock, "/sensors/9040/measurements").json()["results"]) == 5
    (latest,) = get(mock, "/locations/904/latest").json()["results"]
    assert latest["value"] == 99.5 and latest["sensorsId"] == 9040 and latest["locationsId"] == 904
    assert latest["datetime"]["utc"] == "2024-01-01T05:00:00Z"
    assert latest["coordinates"] == {"latitude": 48.85, "longitude": 2.35}
    sensor = get(mock, "/sensors/9040").json()["results"][0]
    assert sensor["latest"]["value"] == 99.5
    assert sensor["datetimeLast"]["utc"] == "2024-01-01T05:00:00Z"
    by_parameter = {
        r["sensorsId"] for r in get(mock, "/parameters/2/latest", limit=1000).json()["results"]
    }
    assert 9040 in by_parameter


# -- API key and rate limits -------------------------------------------------------------------


def test_api_key_is_required_and_never_logged() -> None:
    secret = "s3cr3t-key-value"
    with MockOpenAQ(None, api_key=secret) as mock:
        missing = get(mock, "/parameters/2/latest")
        wrong = get(mock, "/parameters/2/latest", key="nope")
        right = get(mock, "/parameters/2/latest", key=secret)
        log = mock.requests
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 404)
    assert missing.json() == {"detail": "Invalid credentials"}
    assert "x-ratelimit-limit" not in missing.headers and "x-ratelimit-limit" in right.headers
    assert [r.api_key_present for r in log] == [False, True, True]
    assert [r.status for r in log] == [401, 401, 404]
    assert secret not in repr(log)


def test_rate_limit_headers_count_down_and_429_without_retry_after() -> None:
    # the windows run on a virtual clock: no real minute to wait, and no pause of a busy
    # machine between two requests can move one of them into the next window
    clock = VirtualClock(1_700_000_000.0)
    with MockOpenAQ(None, per_minute=4, clock=clock) as mock:
        answers = [get(mock, "/locations") for _ in range(5)]
        early = get(mock, "/locations")
        reset = int(answers[-1].headers["x-ratelimit-reset"])
        clock.advance(reset)
        after = get(mock, "/locations")
        violations = mock.requests_before_reset()
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0", "0"]
    assert [a.headers["x-ratelimit-used"] for a in answers] == ["1", "2", "3", "4", "4"]
    assert {a.headers["x-ratelimit-limit"] for a in answers} == {"4"}
    assert {int(a.headers["x-ratelimit-reset"]) for a in answers} == {60}
    assert "Retry-After" not in answers[-1].headers
    assert answers[-1].json() == {"detail": "Too many requests"}
    assert early.status_code == 429 and violations == 1, "a request before the reset is a violation"
    assert after.status_code == 200 and after.headers["x-ratelimit-used"] == "1"


def test_the_hourly_window_and_separate_keys() -> None:
    clock = VirtualClock(1_700_000_000.0)
    with MockOpenAQ(None, per_minute=100, per_hour=3, clock=clock) as mock:
        a = [get(mock, "/locations", key="a") for _ in range(4)]
        b = get(mock, "/locations", key="b")
    assert [r.status_code for r in a] == [200, 200, 200, 429]
    assert a[-1].headers["x-ratelimit-limit"] == "3"
    assert int(a[-1].headers["x-ratelimit-reset"]) == 3600, "the hour window resets later"
    assert b.status_code == 200 and b.headers["x-ratelimit-used"] == "1", "quotas are per key"


def test_429_every_n_and_the_pending_reset() -> None:
    clock = VirtualClock(1_700_000_000.0)
    with MockOpenAQ(None, fail_with_429_every=3, reset_after_429=1, clock=clock) as mock:
        first = [get(mock, "/locations") for _ in range(3)]
        impatient = get(mock, "/locations")
        clock.advance(1)
        patient = [get(mock, "/locations") for _ in range(3)]
        violations = mock.requests_before_reset()
    assert [r.status_code for r in first] == [200, 200, 429]
    assert first[2].headers["x-ratelimit-reset"] == "1"
    assert first[2].headers["x-ratelimit-remaining"] == "0"
    assert "Retry-After" not in first[2].headers
    assert impatient.status_code == 429 and violations == 1
    assert [r.status_code for r in patient] == [200, 200, 429]


# -- scripted faults -------------------------------------------------------------------------


def test_scripted_status_faults(mock: MockOpenAQ) -> None:
    mock.inject(status=500)
    assert get(mock, "/locations").status_code == 500
    assert get(mock, "/locations").status_code == 200, "a fault fires once"

    firewall = {"message": "Forbidden: violation of rate limit policy"}
    mock.inject(status=403, body=firewall)
    forbidden = get(mock, "/locations")
    assert (forbidden.status_code, forbidden.json()) == (403, firewall)

    mock.inject(status=502, path="/measurements", times=2)
    assert get(mock, "/locations").status_code == 200
    assert get(mock, "/sensors/3/measurements").status_code == 502
    assert get(mock, "/sensors/3/measurements").status_code == 502
    assert get(mock, "/sensors/3/measurements").status_code == 200

    k = len(mock.requests) + 2
    mock.fail_once(503, on_request=k)
    assert [get(mock, "/locations").status_code for _ in range(3)] == [200, 503, 200]


def test_malformed_and_delayed_responses(mock: MockOpenAQ) -> None:
    mock.inject(malformed=True)
    broken = get(mock, "/locations/2178")
    assert broken.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        broken.json()

    mock.inject(delay=2.0)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(mock.base_url + "/locations", timeout=0.2)
    assert time.monotonic() - started < 1.5
    assert get(mock, "/locations").status_code == 200, "the server keeps serving others"


def test_inject_needs_something_to_do(mock: MockOpenAQ) -> None:
    with pytest.raises(ValueError):
        mock.inject()


# -- request log -----------------------------------------------------------------------------


def test_request_log_and_helpers(mock: MockOpenAQ) -> None:
    get(mock, "/locations", iso="IN")
    get(mock, "/sensors/3/measurements", limit=5, page=1)
    get(mock, "/nope")
    log = mock.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/v3/locations", 200),
        ("GET", "/v3/sensors/3/measurements", 200),
        ("GET", "/v3/nope", 404),
    ]
    assert log[0].query == {"iso": "IN"} and log[1].query == {"limit": "5", "page": "1"}
    monotonic, wall, *_ = log[0]
    assert monotonic <= log[1].monotonic_time and abs(wall - time.time()) < 60
    assert mock.max_requests_in_window(60) == 3
    assert mock.max_requests_in_window(1e-9) == 1
    assert mock.requests_before_reset() == 0
    mock.reset_log()
    assert mock.requests == [] and mock.max_requests_in_window() == 0


# -- command line ----------------------------------------------------------------------------


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--fixtures" in capsys.readouterr().out


def test_cli_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "openaq_mock.api", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        url = next(word for word in line.split() if word.startswith("http://"))
        assert url.endswith("/v3")
        assert requests.get(url + "/locations/2178", timeout=5).status_code == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out
