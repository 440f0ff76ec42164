"""The recorded-response loader: every shipped file loads, with the right request attached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingestion.fixtures import (
    DEFAULT_FIXTURES_DIR,
    JSON_MANIFEST,
    RecordedResponse,
    load_recorded,
    locations_in,
    sensors_by_location,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def recorded() -> list[RecordedResponse]:
    return load_recorded()


def _by_source(responses: list[RecordedResponse], source: str) -> RecordedResponse:
    (match,) = [r for r in responses if r.source == source]
    return match


def test_every_shipped_response_file_loads(recorded: list[RecordedResponse]) -> None:
    shipped = {
        p.relative_to(DEFAULT_FIXTURES_DIR).as_posix()
        for p in DEFAULT_FIXTURES_DIR.rglob("*")
        if p.suffix in {".yml", ".json"}
    }
    assert {r.source for r in recorded} == shipped
    assert set(JSON_MANIFEST) <= shipped, "a manifest entry names a file that is not shipped"
    assert len(recorded) == 16
    for response in recorded:
        assert response.status == 200, response.source
        assert response.path.startswith("/v3/"), response.source
        assert isinstance(response.body["results"], list), response.source
        assert response.body["meta"]["name"] == "openaq-api", response.source


def test_cassette_paths_queries_and_headers(recorded: list[RecordedResponse]) -> None:
    day = _by_source(recorded, "openaq-r-vcr/list_sensor_measurements_3.yml")
    assert day.path == "/v3/sensors/3/measurements"
    assert day.query == {
        "datetime_from": "2023-03-07T00:00:00-0500",
        "datetime_to": "2023-03-08T00:00:00-0500",
        "limit": "100",
        "page": "1",
    }
    assert day.headers["content-type"] == "application/json"
    assert day.body["meta"]["found"] == 48 and len(day.body["results"]) == 48

    five = _by_source(recorded, "openaq-r-vcr/list_sensor_measurements_limit_5.yml")
    assert (five.query, five.body["meta"]["found"]) == ({"limit": "5", "page": "1"}, ">5")
    assert _by_source(recorded, "openaq-r-vcr/get_location_1.yml").path == "/v3/locations/1"
    assert _by_source(recorded, "openaq-r-vcr/get_location_1.yml").query == {}


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("openaq-python-prod-slices/measurements_pm25_slice.json", "/v3/sensors/3920/measurements"),
        ("openaq-python-prod-slices/latest_pm25_slice.json", "/v3/parameters/2/latest"),
        ("openaq-python-prod-slices/locations_slice.json", "/v3/locations"),
        ("openaq-python-unit/locations.json", "/v3/locations/2178"),
        ("openaq-python-unit/sensors.json", "/v3/locations/2178/sensors"),
        ("openaq-python-unit/measurements.json", "/v3/sensors/3920/measurements"),
        ("openaq-python-unit/parameters.json", "/v3/parameters/2"),
    ],
)
def test_json_files_answer_the_manifest_request(
    recorded: list[RecordedResponse], source: str, path: str
) -> None:
    response = _by_source(recorded, source)
    assert response.path == path
    assert response.headers == {}
    assert response.body == json.loads((DEFAULT_FIXTURES_DIR / source).read_text())


def test_json_limits_come_from_the_recorded_meta(recorded: list[RecordedResponse]) -> None:
    for response in recorded:
        if response.source.endswith(".json") and "limit" in response.query:
            assert int(response.query["limit"]) == response.body["meta"]["limit"]


def test_order_is_stable_by_file(recorded: list[RecordedResponse]) -> None:
    sources = [r.source for r in recorded]
    assert sources == sorted(sources)
    assert load_recorded() == recorded


def test_locations_in_finds_every_recorded_location(recorded: list[RecordedResponse]) -> None:
    locations = locations_in(recorded)
    assert {2178, 17, 13, 21, 1, 2, 3, 4, 6, 7} == set(locations)
    assert locations[2178]["name"] == "Del Norte"
    assert locations[2178]["timezone"] == "America/Denver"
    pm25 = [s for s in locations[17]["sensors"] if s["parameter"]["name"] == "pm25"]
    assert len(pm25) == 2, "location 17 has two PM2.5 sensors"
    # id 3 is both production's "NMA - Nima" and the R cassettes' test site: the later wins
    assert locations[3]["name"] == "testing site 3"
    assert locations[3]["timezone"] == "America/New_York"


def test_locations_in_keeps_fields_earlier_files_had() -> None:
    def response(obj: dict, source: str) -> RecordedResponse:
        return RecordedResponse("/v3/locations", {}, 200, {}, {"results": [obj]}, source)

    earlier = response({"id": 9, "name": "a", "locality": "Town", "timezone": "UTC"}, "a.json")
    later = response({"id": 9, "name": "b", "locality": None}, "b.json")
    sensors = RecordedResponse(
        "/v3/locations/9/sensors", {}, 200, {}, {"results": [{"id": 1, "name": "x"}]}, "c.json"
    )
    merged = locations_in([earlier, later, sensors])
    assert merged == {9: {"id": 9, "name": "b", "locality": "Town", "timezone": "UTC"}}
    merged[9]["name"] = "mutated"
    assert earlier.body["results"][0]["name"] == "a", "results are copies"


def test_sensors_by_location_merges_both_sources(recorded: list[RecordedResponse]) -> None:
    sensors = sensors_by_location(recorded)
    del_norte = {s["id"]: s for s in sensors[2178]}
    assert len(del_norte) == 8
    assert del_norte[3920]["parameter"]["name"] == "pm25"
    assert del_norte[3920]["coverage"]["percentComplete"] == 76.0, "long form from sensors.json"
    assert [s["id"] for s in sensors[3]] == [3]
    assert "coverage" in sensors[3][0], "long form from list_location_sensors_3.yml"
    assert len(sensors[17]) == len(locations_in(recorded)[17]["sensors"])
    assert set(sensors) == set(locations_in(recorded))


def test_a_subset_directory_loads(tmp_path: Path) -> None:
    (tmp_path / "openaq-r-vcr").mkdir()
    shutil.copy(DEFAULT_FIXTURES_DIR / "openaq-r-vcr/get_location_1.yml", tmp_path / "openaq-r-vcr")
    shutil.copy(DEFAULT_FIXTURES_DIR / "SOURCES.md", tmp_path)
    (responses,) = load_recorded(tmp_path)
    assert (responses.path, responses.source) == (
        "/v3/locations/1",
        "openaq-r-vcr/get_location_1.yml",
    )


def test_an_unlisted_json_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "mystery.json").write_text('{"meta": {}, "results": []}')
    with pytest.warns(UserWarning, match="mystery.json"):
        assert load_recorded(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("openaq-r-vcr/broken.yml", "http_interactions: [\n  - {request: "),
        ("openaq-r-vcr/no_interactions.yml", "recorded_with: VCR\n"),
        (
            "openaq-r-vcr/bad_body.yml",
            (
                "http_interactions:\n- request: {method: GET, uri: 'https://x/v3/locations'}\n"
                "  response: {status: 200, headers: {}, body: {string: '{\"results\": '}}\n"
            ),
        ),
        ("openaq-python-unit/locations.json", '{"meta": {}, "results": ['),
        ("openaq-python-unit/sensors.json", "[1, 2, 3]"),
        ("openaq-python-unit/parameters.json", '{"meta": {}}'),
    ],
)
def test_a_malformed_file_raises_naming_it(tmp_path: Path, name: str, text: str) -> None:
    target = tmp_path / name
    target.parent.mkdir(parents=True)
    target.write_text(text)
    with pytest.raises(ValueError, match=name):
        load_recorded(tmp_path)


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_recorded(tmp_path / "nope")
