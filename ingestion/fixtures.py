"""The recorded OpenAQ v3 responses that ship with the package, loaded as one list.

``ingestion/fixtures/openaq/`` holds real responses recorded by OpenAQ's own clients (see its
``SOURCES.md``): VCR cassettes that carry the request URI, status and headers, and bare JSON
bodies that do not say which request they answer. Fixture replay, the simulator's real
location metadata and the mock OpenAQ server all need the same view of them - "this body
answered that request" - so the parsing lives here, once.

Public surface:

- :data:`DEFAULT_FIXTURES_DIR` - the directory shipped with the package.
- :class:`RecordedResponse` - one recorded request/response pair.
- :data:`JSON_MANIFEST` - which request each bare JSON file answers (written by hand, with
  the reasoning, because the files themselves do not say).
- :func:`load_recorded` - every cassette interaction and every manifest file, in a stable order.
- :func:`locations_in` - every location object in the recorded ``/v3/locations...`` responses.
- :func:`sensors_by_location` - the sensors of each recorded location.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

__all__ = [
    "DEFAULT_FIXTURES_DIR",
    "JSON_MANIFEST",
    "RecordedResponse",
    "load_recorded",
    "locations_in",
    "sensors_by_location",
]

DEFAULT_FIXTURES_DIR = Path(__file__).parent / "fixtures" / "openaq"


@dataclass(frozen=True)
class RecordedResponse:
    """One recorded exchange: the request it answers and the response the API gave.

    ``path`` keeps the ``/v3`` prefix (``/v3/sensors/3/measurements``) so that it can be
    compared with what a client sends; ``query`` is decoded (``datetime_from`` reads
    ``2023-03-07T00:00:00-0500``, not ``...%3A...``). ``source`` is the file it came from,
    relative to the fixtures directory, so that a failing test can name it.
    """

    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    source: str


# Which request each bare JSON response answers: relative file name -> (path, query).
# The query is what the file's own ``meta`` (limit, page) and SOURCES.md say was asked;
# the unit-test files were built with the API's defaults (limit 100, page 1), so no query.
JSON_MANIFEST: dict[str, tuple[str, dict[str, str]]] = {
    # SOURCES.md: "raw PM2.5, starts 2016-03-06T19:00Z, America/Denver offsets; almost
    # certainly sensor 3920 @ location 2178 Del Norte" (2178's datetimeFirst is that same
    # 2016-03-06T19:00Z and 3920 is its only PM2.5 sensor).
    "openaq-python-prod-slices/measurements_pm25_slice.json": (
        "/v3/sensors/3920/measurements",
        {"limit": "1000", "page": "1"},
    ),
    # meta.found=21142 of every PM2.5 sensor's latest value: the parameter-2 latest list.
    "openaq-python-prod-slices/latest_pm25_slice.json": (
        "/v3/parameters/2/latest",
        {"limit": "1000", "page": "1"},
    ),
    # SOURCES.md: "/v3/locations?limit=1000, found '>1000'".
    "openaq-python-prod-slices/locations_slice.json": (
        "/v3/locations",
        {"limit": "1000", "page": "1"},
    ),
    # One location, id 2178 (Del Norte): the single-location endpoint.
    "openaq-python-unit/locations.json": ("/v3/locations/2178", {}),
    # The eight sensors of 2178 (the same ids as locations.json's sensors array).
    "openaq-python-unit/sensors.json": ("/v3/locations/2178/sensors", {}),
    # PM2.5 in µg/m³, hourly, local offset -06:00 on 2023-10-16 (MDT, i.e. America/Denver,
    # the time zone of 2178), shipped beside 2178's location and sensors: the measurements
    # of 2178's only PM2.5 sensor, 3920 (whose datetimeFirst/Last, 2016-2024, cover the
    # date). Caveat: the file is hand-edited ("+00:00" instead of "Z", coverage with
    # datetimeFrom == datetimeTo) and its label "1hour" is what the API gives for hourly
    # aggregates (/sensors/{id}/hours); raw measurements say "raw". The periods are still
    # one hour long, ending on the hour, so they sit harmlessly among 3920's raw hours.
    "openaq-python-unit/measurements.json": ("/v3/sensors/3920/measurements", {}),
    # One parameter, id 2 (pm25), the same body as the R client's get_parameter_2.yml.
    "openaq-python-unit/parameters.json": ("/v3/parameters/2", {}),
}

_VCR_SUFFIXES = (".yml", ".yaml")
_LOCATION_PATH = re.compile(r"^/v3/locations(?:/(\d+))?$")
_LOCATION_SENSORS_PATH = re.compile(r"^/v3/locations/(\d+)/sensors$")


def load_recorded(dir: Path = DEFAULT_FIXTURES_DIR) -> list[RecordedResponse]:
    """Every recorded response under ``dir``, ordered by file path, then by interaction.

    VCR cassettes (``*.yml``) give one :class:`RecordedResponse` per interaction; bare JSON
    files give one each if :data:`JSON_MANIFEST` names them (a manifest entry whose file is
    absent is simply not loaded, so a directory may hold a subset). Anything else (LICENSE,
    SOURCES.md) is skipped; a ``*.json`` missing from the manifest is skipped with a warning,
    since nobody can tell which request it answers. The order is stable so that merges
    ("later files win") are reproducible. A file that cannot be parsed raises ``ValueError``
    naming it.
    """
    root = Path(dir)
    if not root.is_dir():
        raise FileNotFoundError(f"fixtures directory not found: {root}")
    responses: list[RecordedResponse] = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if file.suffix in _VCR_SUFFIXES:
            responses.extend(_load_cassette(file, rel))
        elif rel in JSON_MANIFEST:
            responses.append(_load_json_file(file, rel))
        elif file.suffix == ".json":
            warnings.warn(f"{rel}: not in ingestion.fixtures.JSON_MANIFEST, skipped", stacklevel=2)
    return responses


def locations_in(responses: Iterable[RecordedResponse]) -> dict[int, dict[str, Any]]:
    """Every location object in a ``/v3/locations`` or ``/v3/locations/{id}`` response, by id.

    The same location can appear in several files (the list and the single-location
    endpoint, or a production slice and a test cassette that reuse an id): later responses
    update earlier ones field by field, but never drop a field or overwrite a value with
    null, so no information an earlier file had is lost. Note that a field such as
    ``sensors`` is replaced as a whole. The objects returned are copies.

    Known clash in the shipped fixtures: id 3 is production's "NMA - Nima" (Ghana) in
    ``locations_slice.json`` and "testing site 3" (America/New_York) in the R cassettes,
    which were recorded against a test database. The cassettes sort later and win, which
    keeps location 3 consistent with sensor 3's recorded measurements (offsets -05:00).
    """
    found: dict[int, dict[str, Any]] = {}
    for response in responses:
        if response.status != 200 or not _LOCATION_PATH.match(response.path):
            continue
        for obj in _results(response):
            if isinstance(obj, dict) and obj.get("id") is not None:
                location_id = int(obj["id"])
                found[location_id] = _merge(found.get(location_id, {}), obj)
    return copy.deepcopy(found)


def sensors_by_location(
    responses: Iterable[RecordedResponse],
) -> dict[int, list[dict[str, Any]]]:
    """The sensors of each location: its ``sensors`` array plus ``/locations/{id}/sensors``.

    The location's array (as merged by :func:`locations_in`) gives the short form (id, name,
    parameter); ``/v3/locations/{id}/sensors`` adds the long one (datetimeFirst/Last,
    coverage, latest, summary). Both are merged per sensor id, so a sensor appears once,
    with every field either source had. Every recorded location has an entry, possibly empty.
    """
    responses = list(responses)
    merged: dict[int, dict[int, dict[str, Any]]] = {}
    for location_id, location in locations_in(responses).items():
        sensors = merged.setdefault(location_id, {})
        for sensor in location.get("sensors") or []:
            _add_sensor(sensors, sensor)
    for response in responses:
        match = _LOCATION_SENSORS_PATH.match(response.path)
        if response.status != 200 or not match:
            continue
        sensors = merged.setdefault(int(match[1]), {})
        for sensor in _results(response):
            _add_sensor(sensors, sensor)
    return {lid: copy.deepcopy(list(sensors.values())) for lid, sensors in merged.items()}


def _load_cassette(file: Path, rel: str) -> list[RecordedResponse]:
    """One VCR cassette -> one response per interaction (R vcr and Ruby VCR layouts)."""
    try:
        cassette = yaml.safe_load(file.read_text(encoding="utf-8"))
        interactions = cassette["http_interactions"]
        if not isinstance(interactions, list):
            raise TypeError("http_interactions is not a list")
        return [_interaction(item, rel) for item in interactions]
    except (yaml.YAMLError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{rel}: not a readable VCR cassette: {exc}") from exc


def _interaction(item: dict[str, Any], rel: str) -> RecordedResponse:
    request, response = item["request"], item["response"]
    uri = urlsplit(str(request["uri"]))
    status = response["status"]
    if isinstance(status, dict):  # Ruby VCR: {code: 200, message: OK}
        status = status["code"]
    body = response.get("body") or {}
    if "string" in body:
        text = body["string"]
    elif "base64_string" in body:
        text = base64.b64decode(body["base64_string"]).decode("utf-8")
    else:
        raise KeyError("response.body has neither string nor base64_string")
    return _response(
        path=uri.path,
        query=_query(uri.query),
        status=int(status),
        headers={str(k): _header_value(v) for k, v in (response.get("headers") or {}).items()},
        body=json.loads(text) if text else {},
        source=rel,
    )


def _load_json_file(file: Path, rel: str) -> RecordedResponse:
    """A bare JSON body -> the request :data:`JSON_MANIFEST` says it answers (status 200)."""
    path, query = JSON_MANIFEST[rel]
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
        return _response(
            path=path, query=dict(query), status=200, headers={}, body=body, source=rel
        )
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{rel}: not a readable OpenAQ response: {exc}") from exc


def _response(
    *,
    path: str,
    query: dict[str, str],
    status: int,
    headers: dict[str, str],
    body: Any,
    source: str,
) -> RecordedResponse:
    """Build a :class:`RecordedResponse`, checking the shape every consumer relies on."""
    if not isinstance(body, dict):
        raise TypeError(f"body is a {type(body).__name__}, not a JSON object")
    if status == 200 and not isinstance(body.get("results"), list):
        raise ValueError("a 200 response without a 'results' list")
    return RecordedResponse(path, query, status, headers, body, source)


def _query(text: str) -> dict[str, str]:
    """Decoded query; a repeated name is joined with commas, as the API's lists accept."""
    query: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    return query


def _header_value(value: Any) -> str:
    """Ruby VCR records header values as lists; R vcr as strings."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _results(response: RecordedResponse) -> list[Any]:
    results = response.body.get("results")
    return results if isinstance(results, list) else []


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` updated by ``new``, except that a null in ``new`` never erases a value."""
    merged = dict(old)
    for key, value in new.items():
        if value is not None or merged.get(key) is None:
            merged[key] = value
    return merged


def _add_sensor(sensors: dict[int, dict[str, Any]], sensor: Any) -> None:
    if isinstance(sensor, dict) and sensor.get("id") is not None:
        sensor_id = int(sensor["id"])
        sensors[sensor_id] = _merge(sensors.get(sensor_id, {}), sensor)
