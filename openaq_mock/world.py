"""A deterministic world of OpenAQ locations and sensors, for the mock API at full scale.

The recorded fixtures hold ten locations; the real API holds tens of thousands, most of
them publishing a reading an hour. A collector that reads the whole world through
``/v3/parameters/{id}/latest`` under 60 requests a minute, and a benchmark that checks it
sent every reading once, need a world that size whose every reading is known in advance.
:class:`World` is that world, built from a :class:`WorldProfile` in about a second and a half, kept in
flat arrays and lists (about 30 MB) and answering in the API's shapes.

The model (every number is drawn from ``profile.seed``; no global random state):

- A location lies in a region: a country (ISO code), an IANA time zone that matches the
  place, and a box of coordinates inside that zone. Regions are weighted roughly like
  OpenAQ's coverage (the US and Europe first). Its provider is a reference network of that
  country (AirNow, EEA, CPCB, ...; ``isMonitor`` true) or a low-cost network (PurpleAir,
  AirGradient, Clarity, AirQo; ``isMonitor`` false).
- A location has 1-6 sensors over pm25, pm10, o3, no2, so2 and co; the units, hence the
  OpenAQ parameter id, follow the provider: µg/m³ (EEA, CPCB: 1-6), ppm (Japan, Korea:
  10, 7, 8, 9) or US-style ppm with NO₂ in ppb (AirNow: 10, 15, 8, 9). Location ids and
  sensor ids increase with gaps, as OpenAQ's do.
- A sensor has a period P (3600 s for most, 1800 s or 900 s for some; never shorter) and
  a publication delay D (2-50 min). The reading whose period ends at E (a multiple of P
  since the epoch, so UTC-aligned) becomes the sensor's latest at E + D and stays latest
  until the next one is published at E + P + D. Its first period end is F; a dead sensor
  (about 10%: whole dead locations, and single dead sensors) has a last period end L
  months or years before ``profile.reference_time`` and stays latest at L forever. So the
  latest period end at time t is ``min(floor((t - D) / P) * P, L)``, if that is >= F.
- A value is a function of (seed, sensor, E): a site level for the parameter and place,
  a daily cycle in local solar time, a day-to-day swing shared by the location's sensors,
  and noise; about 0.3% are null and 0.2% the -9999 sentinel some networks send.

Public surface: :class:`WorldProfile`, :class:`World`, :class:`SensorInfo`,
:data:`PARAMETERS`. Times are epoch seconds (``float``; a ``datetime`` is accepted too);
period ends in strings are ``YYYY-MM-DDTHH:MM:SSZ`` as the API writes them.

Country ids 9 (IN), 10 (CN), 79 (GB), 152 (GH), 155 (US) and provider ids 119 (AirNow)
and 168 (CPCB) are the real API's (as recorded in the fixtures); the other ids are the
mock's own.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["PARAMETERS", "SensorInfo", "World", "WorldProfile"]

UGM3 = "\u00b5g/m\u00b3"  # "µg/m³" with the MICRO SIGN, as the API spells it
DAY = 86_400
YEAR = 365 * DAY
EARTH_RADIUS_METRES = 6_371_008.8
#: the "last period end" of a sensor that is alive
_ALIVE = 1 << 62
_M64 = (1 << 64) - 1
_U21 = float(1 << 21)


class _Parameter(NamedTuple):
    name: str
    units: str
    display_name: str
    #: units per µg/m³ (25 °C, 1 atm)
    per_ugm3: float
    digits: int
    description: str


#: The parameters of the world, by OpenAQ parameter id (an id names a parameter AND units).
PARAMETERS: Mapping[int, _Parameter] = MappingProxyType(
    {
        1: _Parameter("pm10", UGM3, "PM10", 1.0, 1,
                      "Particulate matter less than 10 micrometers in diameter mass concentration"),
        2: _Parameter("pm25", UGM3, "PM2.5", 1.0, 1,
                      "Particulate matter less than 2.5 micrometers in diameter mass concentration"),
        3: _Parameter("o3", UGM3, "O\u2083 mass", 1.0, 1, "Ozone mass concentration"),
        4: _Parameter("co", UGM3, "CO mass", 1.0, 1, "Carbon Monoxide mass concentration"),
        5: _Parameter("no2", UGM3, "NO\u2082 mass", 1.0, 1, "Nitrogen Dioxide mass concentration"),
        6: _Parameter("so2", UGM3, "SO\u2082 mass", 1.0, 1, "Sulfur Dioxide mass concentration"),
        7: _Parameter("no2", "ppm", "NO\u2082", 1 / 1880, 4, "Nitrogen Dioxide concentration"),
        8: _Parameter("co", "ppm", "CO", 1 / 1145, 3, "Carbon Monoxide concentration"),
        9: _Parameter("so2", "ppm", "SO\u2082", 1 / 2620, 4, "Sulfur Dioxide concentration"),
        10: _Parameter("o3", "ppm", "O\u2083", 1 / 1960, 4, "Ozone concentration"),
        15: _Parameter("no2", "ppb", "NO\u2082", 1 / 1.88, 1, "Nitrogen Dioxide concentration"),
    }
)  # fmt: skip

#: parameter name -> id, per unit scheme of a provider
_SCHEMES: dict[str, dict[str, int]] = {
    "ugm3": {"pm25": 2, "pm10": 1, "o3": 3, "no2": 5, "co": 4, "so2": 6},
    "ppm": {"pm25": 2, "pm10": 1, "o3": 10, "no2": 7, "co": 8, "so2": 9},
    "us": {"pm25": 2, "pm10": 1, "o3": 10, "no2": 15, "co": 8, "so2": 9},
}


class _Pollutant(NamedTuple):
    #: median site level in µg/m³ where the pollution factor is 1
    median: float
    #: how strongly the place's pollution factor applies (0: not at all)
    exponent: float
    #: spread of site levels (log scale)
    site_sigma: float
    #: daily cycle: amplitude, hour of the peak (local solar time), cycle length in hours
    amplitude: float
    peak_hour: float
    cycle_hours: float


_POLLUTANTS: dict[str, _Pollutant] = {
    "pm25": _Pollutant(9.0, 1.0, 0.45, 0.25, 8.0, 12.0),
    "pm10": _Pollutant(18.0, 0.9, 0.45, 0.20, 8.0, 12.0),
    "o3": _Pollutant(55.0, 0.0, 0.30, 0.50, 15.0, 24.0),
    "no2": _Pollutant(18.0, 0.5, 0.55, 0.40, 8.0, 12.0),
    "co": _Pollutant(350.0, 0.6, 0.45, 0.30, 8.0, 12.0),
    "so2": _Pollutant(4.0, 0.8, 0.70, 0.15, 8.0, 12.0),
}
#: how likely a reference location has each parameter (for choosing its 1-6 sensors)
_NAME_WEIGHTS = {"pm25": 1.0, "pm10": 0.85, "no2": 0.8, "o3": 0.75, "co": 0.5, "so2": 0.5}


class _Provider(NamedTuple):
    id: int
    name: str
    reference: bool
    scheme: str
    #: (period seconds, weight)
    periods: tuple[tuple[int, float], ...]
    #: publication delay range, seconds
    delay: tuple[int, int]
    instrument: tuple[int, str]
    #: the parameters it measures, if not the usual choice
    only: tuple[str, ...] = ()


_GOV = (2, "Government Monitor")
_HOURLY = ((3600, 1.0),)
_PROVIDERS: dict[str, _Provider] = {
    "airnow": _Provider(119, "AirNow", True, "us", _HOURLY, (900, 3000), _GOV),
    "eea": _Provider(70, "EEA", True, "ugm3", _HOURLY, (600, 3000), _GOV),
    "cpcb": _Provider(168, "CPCB", True, "ugm3", ((900, 1.0),), (300, 2400), _GOV),
    "cnemc": _Provider(213, "China National Environmental Monitoring Centre", True, "ugm3",
                       _HOURLY, (600, 2400), _GOV),
    "defra": _Provider(81, "DEFRA", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "soramame": _Provider(164, "Japan Soramame", True, "ppm", _HOURLY, (1200, 3000), _GOV),
    "airkorea": _Provider(165, "AirKorea", True, "ppm", _HOURLY, (600, 2400), _GOV),
    "taiwan": _Provider(221, "Taiwan EPA", True, "us", _HOURLY, (600, 2400), _GOV),
    "pcd": _Provider(222, "Thailand Pollution Control Department", True, "us", _HOURLY,
                     (900, 3000), _GOV),
    "nsw": _Provider(138, "Australia - New South Wales", True, "ppm", _HOURLY, (900, 3000),
                     _GOV),
    "epavic": _Provider(139, "EPA Victoria", True, "ugm3", ((3600, 0.5), (1800, 0.5)),
                        (600, 2400), _GOV),
    "qld": _Provider(140, "Australia - Queensland", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "wa": _Provider(141, "Australia - Western Australia", True, "ugm3", _HOURLY, (900, 3000),
                    _GOV),
    "sa": _Provider(142, "Australia - South Australia", True, "ugm3", _HOURLY, (900, 3000),
                    _GOV),
    "nz": _Provider(143, "Auckland Council", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "sinaica": _Provider(150, "SINAICA", True, "ppm", _HOURLY, (900, 3000), _GOV),
    "cetesb": _Provider(151, "CETESB", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "sinca": _Provider(152, "SINCA", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "rmcab": _Provider(153, "Bogota RMCAB", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "senamhi": _Provider(154, "SENAMHI", True, "ugm3", _HOURLY, (900, 3000), _GOV),
    "turkey": _Provider(160, "Turkey Ministry of Environment", True, "ugm3", _HOURLY,
                        (900, 3000), _GOV),
    "israel": _Provider(161, "Israel Ministry of Environmental Protection", True, "ugm3",
                        ((3600, 0.6), (1800, 0.4)), (600, 2400), _GOV),
    "saaqis": _Provider(162, "South Africa Air Quality Information System", True, "ugm3",
                        ((3600, 0.5), (1800, 0.5)), (600, 2400), _GOV),
    "stateair": _Provider(163, "US Diplomatic Post", True, "ugm3", _HOURLY, (900, 2400), _GOV,
                          ("pm25",)),
    "purpleair": _Provider(8, "PurpleAir", False, "ugm3", ((1800, 0.5), (3600, 0.5)),
                           (120, 1200), (3, "PurpleAir Sensor")),
    "airgradient": _Provider(166, "AirGradient", False, "ugm3", ((900, 0.6), (3600, 0.4)),
                             (120, 900), (11, "AirGradient Sensor")),
    "clarity": _Provider(167, "Clarity", False, "ugm3", ((900, 0.3), (3600, 0.7)),
                         (180, 1500), (5, "Clarity Node")),
    "airqo": _Provider(169, "AirQo", False, "ugm3", _HOURLY, (300, 1800), (12, "AirQo Monitor")),
}  # fmt: skip

_COUNTRIES: dict[str, tuple[int, str]] = {
    "US": (155, "United States"), "CA": (156, "Canada"), "MX": (157, "Mexico"),
    "BR": (45, "Brazil"), "CL": (46, "Chile"), "CO": (47, "Colombia"), "PE": (48, "Peru"),
    "GB": (79, "United Kingdom"), "IE": (80, "Ireland"), "FR": (22, "France"),
    "DE": (50, "Germany"), "ES": (67, "Spain"), "PT": (68, "Portugal"), "IT": (75, "Italy"),
    "NL": (94, "Netherlands"), "BE": (18, "Belgium"), "CH": (26, "Switzerland"),
    "AT": (14, "Austria"), "CZ": (30, "Czechia"), "PL": (77, "Poland"),
    "SE": (126, "Sweden"), "NO": (104, "Norway"), "FI": (59, "Finland"),
    "DK": (33, "Denmark"), "HU": (84, "Hungary"), "RO": (114, "Romania"),
    "GR": (72, "Greece"), "TR": (141, "Türkiye"), "LT": (91, "Lithuania"),
    "RS": (118, "Serbia"), "IN": (9, "India"), "CN": (10, "China"), "JP": (86, "Japan"),
    "KR": (88, "South Korea"), "TW": (133, "Taiwan"), "TH": (132, "Thailand"),
    "VN": (146, "Vietnam"), "ID": (82, "Indonesia"), "PH": (110, "Philippines"),
    "BD": (16, "Bangladesh"), "PK": (108, "Pakistan"), "NP": (103, "Nepal"),
    "MN": (98, "Mongolia"), "AE": (3, "United Arab Emirates"), "IL": (83, "Israel"),
    "KZ": (89, "Kazakhstan"), "AU": (15, "Australia"), "NZ": (105, "New Zealand"),
    "ZA": (153, "South Africa"), "NG": (100, "Nigeria"), "GH": (152, "Ghana"),
    "KE": (87, "Kenya"), "UG": (143, "Uganda"), "EG": (57, "Egypt"),
}  # fmt: skip

#: the typical pollution level of a country, relative to a clean European one
_POLLUTION = {
    "IN": 5.0, "BD": 6.0, "PK": 6.0, "NP": 4.5, "CN": 3.5, "MN": 3.0, "EG": 5.0,
    "NG": 4.0, "UG": 4.0, "KE": 2.5, "GH": 3.5, "VN": 2.5, "ID": 2.5, "TH": 2.0,
    "PH": 1.8, "AE": 3.0, "KZ": 2.5, "TR": 1.8, "MX": 1.8, "PE": 2.0, "CO": 1.7,
    "CL": 1.6, "BR": 1.4, "ZA": 2.0, "KR": 1.6, "TW": 1.3, "JP": 1.0, "RS": 2.0,
    "PL": 1.6, "RO": 1.4, "HU": 1.4, "IT": 1.4, "GR": 1.3, "CZ": 1.3, "IL": 1.5,
    "US": 0.8, "CA": 0.7, "AU": 0.6, "NZ": 0.5, "SE": 0.5, "NO": 0.5, "FI": 0.5,
}  # fmt: skip

# (key, weight) of the providers of a region
_US = (("airnow", 0.45), ("purpleair", 0.38), ("clarity", 0.10), ("airgradient", 0.07))
_CA = (("airnow", 0.6), ("purpleair", 0.3), ("airgradient", 0.1))
_EU = (("eea", 0.72), ("purpleair", 0.1), ("airgradient", 0.1), ("clarity", 0.08))
_ASIA_LOW = (("stateair", 0.15), ("airgradient", 0.45), ("purpleair", 0.2), ("clarity", 0.2))
_AFRICA = (("stateair", 0.15), ("airqo", 0.45), ("airgradient", 0.25), ("clarity", 0.15))


class _Region(NamedTuple):
    iso: str
    tz: str
    lat: tuple[float, float]
    lon: tuple[float, float]
    weight: float
    providers: tuple[tuple[str, float], ...]


def _own(key: str, low: tuple[tuple[str, float], ...] = (("purpleair", 0.2), ("airgradient", 0.1))):
    """A national network with a share of low-cost sensors."""
    return ((key, 1.0 - sum(w for _, w in low)), *low)


# Boxes lie inside the zone (a box may reach into the sea; it never crosses a zone line).
_REGIONS: tuple[_Region, ...] = (
    _Region("US", "America/New_York", (33.0, 44.5), (-81.0, -71.0), 9.0, _US),
    _Region("US", "America/Chicago", (29.5, 45.0), (-97.0, -88.0), 7.0, _US),
    _Region("US", "America/Denver", (37.0, 45.0), (-111.0, -104.5), 2.5, _US),
    _Region("US", "America/Phoenix", (31.5, 36.5), (-113.5, -109.5), 1.0, _US),
    _Region("US", "America/Los_Angeles", (33.0, 47.0), (-122.5, -117.5), 8.0, _US),
    _Region("US", "America/Anchorage", (60.0, 62.0), (-151.0, -146.0), 0.3, _US),
    _Region("US", "Pacific/Honolulu", (19.5, 21.6), (-158.2, -155.0), 0.3, _US),
    _Region("CA", "America/Toronto", (43.0, 46.0), (-80.0, -74.0), 2.0, _CA),
    _Region("CA", "America/Vancouver", (48.5, 50.5), (-124.0, -119.0), 1.0, _CA),
    _Region("CA", "America/Edmonton", (50.5, 54.0), (-115.0, -111.0), 0.7, _CA),
    _Region("MX", "America/Mexico_City", (18.5, 20.5), (-100.0, -97.5), 1.0, _own("sinaica")),
    _Region("MX", "America/Monterrey", (25.0, 26.2), (-101.0, -99.5), 0.4, _own("sinaica")),
    _Region("BR", "America/Sao_Paulo", (-24.0, -19.5), (-49.0, -41.0), 1.0,
            _own("cetesb", (("purpleair", 0.2), ("airgradient", 0.2)))),
    _Region("CL", "America/Santiago", (-37.0, -32.5), (-72.0, -70.5), 1.0,
            _own("sinca", (("airgradient", 0.2),))),
    _Region("CO", "America/Bogota", (3.0, 7.0), (-76.0, -73.5), 0.5,
            _own("rmcab", (("airgradient", 0.3),))),
    _Region("PE", "America/Lima", (-13.0, -8.0), (-78.0, -76.0), 0.3,
            _own("senamhi", (("airgradient", 0.4),))),
    _Region("GB", "Europe/London", (50.7, 54.5), (-3.0, 0.3), 3.0,
            _own("defra", (("purpleair", 0.2), ("airgradient", 0.1), ("clarity", 0.1)))),
    _Region("IE", "Europe/Dublin", (52.0, 54.0), (-9.0, -6.3), 0.4, _EU),
    _Region("FR", "Europe/Paris", (43.6, 49.5), (0.0, 6.0), 3.0, _EU),
    _Region("DE", "Europe/Berlin", (48.0, 53.5), (7.0, 13.5), 4.0, _EU),
    _Region("ES", "Europe/Madrid", (37.5, 42.5), (-6.0, -1.0), 3.0, _EU),
    _Region("PT", "Europe/Lisbon", (37.5, 41.5), (-8.6, -7.0), 0.6, _EU),
    _Region("IT", "Europe/Rome", (41.0, 45.3), (9.0, 12.5), 3.0, _EU),
    _Region("NL", "Europe/Amsterdam", (51.5, 53.0), (4.6, 6.8), 1.2, _EU),
    _Region("BE", "Europe/Brussels", (50.3, 51.2), (3.5, 5.8), 0.7, _EU),
    _Region("CH", "Europe/Zurich", (46.3, 47.5), (6.5, 9.5), 0.5, _EU),
    _Region("AT", "Europe/Vienna", (47.0, 48.5), (13.0, 16.5), 0.7, _EU),
    _Region("CZ", "Europe/Prague", (49.0, 50.7), (13.0, 17.5), 1.0, _EU),
    _Region("PL", "Europe/Warsaw", (50.0, 54.0), (15.5, 23.0), 2.0, _EU),
    _Region("SE", "Europe/Stockholm", (56.0, 60.0), (13.0, 18.5), 0.6, _EU),
    _Region("NO", "Europe/Oslo", (58.5, 61.0), (6.0, 11.0), 0.6, _EU),
    _Region("FI", "Europe/Helsinki", (60.2, 63.0), (22.0, 29.0), 0.4, _EU),
    _Region("DK", "Europe/Copenhagen", (55.0, 57.0), (8.5, 12.0), 0.3, _EU),
    _Region("HU", "Europe/Budapest", (46.5, 48.0), (17.0, 21.0), 0.4, _EU),
    _Region("RO", "Europe/Bucharest", (44.5, 47.0), (23.0, 27.0), 0.6, _EU),
    _Region("GR", "Europe/Athens", (37.8, 40.8), (21.0, 23.5), 0.4, _EU),
    _Region("LT", "Europe/Vilnius", (54.2, 56.0), (22.0, 26.0), 0.2, _EU),
    _Region("RS", "Europe/Belgrade", (43.0, 45.5), (19.5, 22.0), 0.3, _EU),
    _Region("TR", "Europe/Istanbul", (37.0, 41.0), (28.0, 36.0), 1.5,
            _own("turkey", (("airgradient", 0.1),))),
    _Region("IN", "Asia/Kolkata", (22.0, 27.0), (74.0, 83.5), 3.0,
            _own("cpcb", (("airgradient", 0.15), ("purpleair", 0.05), ("clarity", 0.05)))),
    _Region("IN", "Asia/Kolkata", (12.0, 21.0), (74.0, 80.0), 3.0,
            _own("cpcb", (("airgradient", 0.15), ("purpleair", 0.05), ("clarity", 0.05)))),
    _Region("IN", "Asia/Kolkata", (28.3, 28.9), (76.8, 77.5), 1.5,
            _own("cpcb", (("airgradient", 0.15), ("purpleair", 0.05), ("clarity", 0.05)))),
    _Region("CN", "Asia/Shanghai", (22.5, 40.5), (108.0, 119.0), 5.0,
            _own("cnemc", (("stateair", 0.05), ("airgradient", 0.05)))),
    _Region("JP", "Asia/Tokyo", (33.0, 36.5), (132.0, 140.0), 3.0,
            _own("soramame", (("purpleair", 0.1),))),
    _Region("KR", "Asia/Seoul", (35.0, 37.7), (126.6, 129.0), 2.0,
            _own("airkorea", (("airgradient", 0.1),))),
    _Region("TW", "Asia/Taipei", (22.6, 25.2), (120.2, 121.6), 0.8,
            _own("taiwan", (("airgradient", 0.15),))),
    _Region("TH", "Asia/Bangkok", (13.0, 19.0), (99.0, 102.0), 1.5,
            _own("pcd", (("airgradient", 0.3), ("purpleair", 0.1)))),
    _Region("VN", "Asia/Ho_Chi_Minh", (20.5, 21.5), (105.3, 106.5), 0.5, _ASIA_LOW),
    _Region("VN", "Asia/Ho_Chi_Minh", (10.3, 11.2), (106.2, 107.0), 0.5, _ASIA_LOW),
    _Region("ID", "Asia/Jakarta", (-7.8, -6.1), (106.0, 111.0), 0.5, _ASIA_LOW),
    _Region("PH", "Asia/Manila", (14.0, 15.0), (120.6, 121.3), 0.3, _ASIA_LOW),
    _Region("BD", "Asia/Dhaka", (23.3, 24.2), (89.8, 90.8), 0.3, _ASIA_LOW),
    _Region("PK", "Asia/Karachi", (31.0, 32.0), (73.0, 74.5), 0.4, _ASIA_LOW),
    _Region("NP", "Asia/Kathmandu", (27.5, 27.8), (85.2, 85.5), 0.2, _ASIA_LOW),
    _Region("MN", "Asia/Ulaanbaatar", (47.8, 48.0), (106.7, 107.1), 0.2, _ASIA_LOW),
    _Region("AE", "Asia/Dubai", (24.2, 25.4), (54.5, 55.6), 0.2, _ASIA_LOW),
    _Region("IL", "Asia/Jerusalem", (31.3, 32.9), (34.8, 35.3), 0.5,
            _own("israel", (("purpleair", 0.3),))),
    _Region("KZ", "Asia/Almaty", (43.1, 43.4), (76.7, 77.1), 0.2, _ASIA_LOW),
    _Region("AU", "Australia/Sydney", (-34.5, -32.5), (150.2, 151.5), 1.5, _own("nsw")),
    _Region("AU", "Australia/Melbourne", (-38.2, -37.5), (144.5, 145.5), 1.0, _own("epavic")),
    _Region("AU", "Australia/Brisbane", (-28.0, -26.5), (152.5, 153.2), 0.6, _own("qld")),
    _Region("AU", "Australia/Perth", (-32.5, -31.5), (115.7, 116.2), 0.4, _own("wa")),
    _Region("AU", "Australia/Adelaide", (-35.2, -34.6), (138.4, 138.8), 0.3, _own("sa")),
    _Region("NZ", "Pacific/Auckland", (-37.2, -36.6), (174.5, 175.0), 0.4,
            _own("nz", (("purpleair", 0.2),))),
    _Region("ZA", "Africa/Johannesburg", (-26.5, -25.5), (27.5, 28.8), 0.6,
            _own("saaqis", (("airqo", 0.1), ("airgradient", 0.15)))),
    _Region("ZA", "Africa/Johannesburg", (-34.1, -33.8), (18.4, 18.8), 0.3,
            _own("saaqis", (("airqo", 0.1), ("airgradient", 0.15)))),
    _Region("NG", "Africa/Lagos", (6.4, 6.7), (3.2, 3.6), 0.3, _AFRICA),
    _Region("GH", "Africa/Accra", (5.5, 5.7), (-0.3, 0.0), 0.2, _AFRICA),
    _Region("KE", "Africa/Nairobi", (-1.4, -1.2), (36.7, 37.0), 0.3, _AFRICA),
    _Region("UG", "Africa/Kampala", (0.2, 0.45), (32.45, 32.7), 0.3, _AFRICA),
    _Region("EG", "Africa/Cairo", (29.9, 30.2), (31.1, 31.4), 0.2, _AFRICA),
)  # fmt: skip

_SYLLABLES = (
    "ka", "lo", "mi", "ran", "ber", "to", "vel", "son", "dar", "ni", "por", "ta", "lin", "ge",
    "mor", "ash", "el", "fen", "wick", "ham", "sal", "bri", "cor", "den", "val", "rio", "sa",
    "nor", "tam", "ford", "ley", "bu", "chi", "ma", "ko", "ru", "zen", "pa", "li", "ven",
)  # fmt: skip
_SUFFIXES = (
    "Road", "Park", "School", "Station", "North", "South", "East", "West", "Centre", "Airport",
    "Harbour", "Hill", "Street", "Library", "Depot", "Primary School", "Community Centre",
    "Water Works", "Fire Station", "Hospital", "Stadium", "Market", "Bridge", "Junction",
)  # fmt: skip

#: sensors per location: (count, weight)
_REFERENCE_COUNTS = ((1, 0.02), (2, 0.05), (3, 0.10), (4, 0.18), (5, 0.25), (6, 0.40))
_LOW_COST_COUNTS = ((1, 0.20), (2, 0.55), (3, 0.25))


@dataclass(frozen=True)
class WorldProfile:
    """The knobs of a :class:`World`. The same profile always builds the same world."""

    #: how many locations (sensors: about 3.6 per location)
    locations: int = 30_000
    seed: int = 7
    #: the instant the world is described at, epoch seconds (2026-01-01T00:00:00Z): every
    #: sensor has started by then and every dead sensor has died 30 days to 5 years before
    #: (a clock set earlier sees some sensors not started yet and fewer dead ones)
    reference_time: float = 1_767_225_600.0
    #: share of dead sensors (four fifths of it as whole dead locations)
    dead_share: float = 0.10
    #: share of readings whose value is null, and share that are the -9999 sentinel
    null_rate: float = 0.003
    sentinel_rate: float = 0.002

    def __post_init__(self) -> None:
        if self.locations < 1:
            raise ValueError("a world needs at least one location")
        for name in ("dead_share", "null_rate", "sentinel_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")


@dataclass(frozen=True)
class SensorInfo:
    """What the world knows of a sensor (``period_end`` values are epoch seconds)."""

    id: int
    location_id: int
    parameter_id: int
    parameter: str
    units: str
    period_seconds: int
    #: seconds from a period's end until the reading is published (becomes the latest)
    delay_seconds: int
    first_period_end: int
    #: the last period end of a dead sensor, None for a live one
    last_period_end: int | None
    timezone: str
    latitude: float
    longitude: float
    provider: str
    is_monitor: bool

    @property
    def dead(self) -> bool:
        return self.last_period_end is not None

    def latest_period_end(self, at: float) -> int | None:
        """The period end of the sensor's latest reading at ``at``, None before the first."""
        end = (math.floor(at) - self.delay_seconds) // self.period_seconds * self.period_seconds
        if self.last_period_end is not None and end > self.last_period_end:
            end = self.last_period_end
        return end if end >= self.first_period_end else None


class World:
    """A deterministic world of locations and sensors (see the module docstring)."""

    def __init__(self, profile: WorldProfile | None = None) -> None:
        self.profile = profile or WorldProfile()
        seed = self.profile.seed
        self._salt = _mix(seed * 0x5851F42D4C957F2D + 0x1234)
        self._day_salt = _mix(self._salt ^ 0xD1B54A32D192ED03)
        self._null_cut = int(self.profile.null_rate * (1 << 20))
        self._sentinel_cut = self._null_cut + int(self.profile.sentinel_rate * (1 << 20))
        self._tz_names: list[str] = sorted({r.tz for r in _REGIONS})
        self._zones = [ZoneInfo(name) for name in self._tz_names]
        self._provider_keys = list(_PROVIDERS)
        self._stamps: dict[tuple[int, int], tuple[str, str]] = {}
        self._utc_strings: dict[int, str] = {}
        self._swings: dict[int, float] = {}
        #: per parameter id: daily-cycle amplitude, peak hour, hours per radian, digits
        self._models = {
            pid: (
                _POLLUTANTS[spec.name].amplitude,
                _POLLUTANTS[spec.name].peak_hour,
                _POLLUTANTS[spec.name].cycle_hours / (2 * math.pi),
                spec.digits,
            )
            for pid, spec in PARAMETERS.items()
        }
        self._threshold_cache: dict[tuple[int, int | None], tuple[list[float], float]] = {}
        self._cache_lock = threading.Lock()
        self._build()

    # -- building -----------------------------------------------------------------------

    def _build(self) -> None:
        p = self.profile
        rng = random.Random(f"openaq-mock-world:{p.seed}")
        ref = int(p.reference_time)
        tz_index = {name: i for i, name in enumerate(self._tz_names)}
        provider_index = {key: i for i, key in enumerate(self._provider_keys)}
        region_weights = list(_cumulative(r.weight for r in _REGIONS))
        dead_location_share = p.dead_share * 0.8
        dead_sensor_share = (p.dead_share - dead_location_share) / (1 - dead_location_share)

        # locations
        self._loc_ids = array("q")
        self._loc_region = array("H")
        self._loc_tz = array("H")
        self._loc_provider = array("H")
        self._loc_lat = array("d")
        self._loc_lon = array("d")
        self._loc_mask = array("q")  # bit i set: a sensor with parameter id i
        self._loc_first_sensor = array("q")
        # sensors (index order = id order)
        self._s_ids = array("q")
        self._s_loc = array("q")
        self._s_pid = array("B")
        self._s_period = array("q")
        self._s_delay = array("q")
        self._s_first = array("q")
        self._s_last = array("q")
        self._s_base = array("d")

        location_id = rng.randint(2, 20)
        sensor_id = rng.randint(3, 30)
        for _ in range(p.locations):
            region_no = bisect.bisect(region_weights, rng.random() * region_weights[-1])
            region_no = min(region_no, len(_REGIONS) - 1)
            region = _REGIONS[region_no]
            provider_key = _weighted(rng, region.providers)
            provider = _PROVIDERS[provider_key]
            lat = round(rng.uniform(*region.lat), 6)
            lon = round(rng.uniform(*region.lon), 6)
            loc = len(self._loc_ids)
            self._loc_ids.append(location_id)
            self._loc_region.append(region_no)
            self._loc_tz.append(tz_index[region.tz])
            self._loc_provider.append(provider_index[provider_key])
            self._loc_lat.append(lat)
            self._loc_lon.append(lon)
            self._loc_first_sensor.append(len(self._s_ids))
            location_id += _id_gap(rng)

            # when the location reported first, and for a dead one last
            if rng.random() < dead_location_share:
                died = ref - rng.randint(30 * DAY, 5 * YEAR)
                born = died - rng.randint(60 * DAY, 6 * YEAR)
            else:
                died = None
                born = ref - rng.randint(120 * DAY, 9 * YEAR)
            period = _weighted(rng, provider.periods)
            names = _sensor_names(rng, provider)
            pollution = _POLLUTION.get(region.iso, 1.0)
            mask = 0
            for name in sorted(names):
                pid = _SCHEMES[provider.scheme][name]
                mask |= 1 << pid
                end = died if died is not None else ref
                start = born
                if rng.random() < 0.3:  # added to the site later
                    start = born + rng.randint(0, max(0, (end - born) // 2))
                last = died
                if died is None and rng.random() < dead_sensor_share:
                    low, high = max(start + 30 * DAY, ref - 5 * YEAR), ref - 30 * DAY
                    if high > low:  # else too young to have died: it stays alive
                        last = rng.randint(low, high)
                first_end = -(-start // period) * period
                last_end = _ALIVE if last is None else max(first_end, last // period * period)
                model = _POLLUTANTS[name]
                level = model.median * pollution**model.exponent
                level *= math.exp(rng.gauss(0.0, model.site_sigma))
                self._s_ids.append(sensor_id)
                self._s_loc.append(loc)
                self._s_pid.append(pid)
                self._s_period.append(period)
                self._s_delay.append(rng.randint(*provider.delay))
                self._s_first.append(first_end)
                self._s_last.append(last_end)
                self._s_base.append(level * PARAMETERS[pid].per_ugm3)
                sensor_id += _sensor_gap(rng)
            self._loc_mask.append(mask)
        self._loc_first_sensor.append(len(self._s_ids))

        # per parameter id: the sensors in id order, with what `latest` needs, as lists
        by_pid: dict[int, list[int]] = {}
        for j, pid in enumerate(self._s_pid):
            by_pid.setdefault(pid, []).append(j)
        self._by_pid: dict[int, _ParameterSensors] = {
            pid: _ParameterSensors(
                indices,
                [self._s_delay[j] for j in indices],
                [self._s_period[j] for j in indices],
                [self._s_first[j] for j in indices],
                [self._s_last[j] for j in indices],
            )
            for pid, indices in sorted(by_pid.items())
        }

    # -- sizes and look-ups ---------------------------------------------------------------

    @property
    def location_count(self) -> int:
        return len(self._loc_ids)

    @property
    def sensor_count(self) -> int:
        return len(self._s_ids)

    def location_ids(self) -> list[int]:
        """Every location id, ascending."""
        return self._loc_ids.tolist()

    def sensor_ids(self, parameter_id: int | None = None) -> list[int]:
        """Every sensor id (of one parameter id), ascending."""
        if parameter_id is None:
            return self._s_ids.tolist()
        group = self._by_pid.get(int(parameter_id))
        return [self._s_ids[j] for j in group.indices] if group else []

    def sensors_per_parameter(self) -> dict[int, int]:
        """Parameter id -> how many sensors have it."""
        return {pid: len(group.indices) for pid, group in self._by_pid.items()}

    def parameter_ids(self, names: Iterable[str]) -> set[int]:
        """The parameter ids of these names that some sensor has: ``{"no2"}`` -> ``{5, 7, 15}``."""
        wanted = {names} if isinstance(names, str) else set(names)
        return {pid for pid in self._by_pid if PARAMETERS[pid].name in wanted}

    def parameter(self, parameter_id: int) -> dict[str, Any]:
        """The ``/v3/parameters/{id}`` object (KeyError for an id the world does not use)."""
        spec = PARAMETERS[int(parameter_id)]
        return {
            "id": int(parameter_id),
            "name": spec.name,
            "units": spec.units,
            "displayName": spec.display_name,
            "description": spec.description,
        }

    def sensor(self, sensor_id: int) -> SensorInfo:
        """The sensor's metadata (KeyError if there is no such sensor)."""
        j = self._sensor_index(sensor_id)
        loc = self._s_loc[j]
        pid = self._s_pid[j]
        last = self._s_last[j]
        return SensorInfo(
            id=self._s_ids[j],
            location_id=self._loc_ids[loc],
            parameter_id=pid,
            parameter=PARAMETERS[pid].name,
            units=PARAMETERS[pid].units,
            period_seconds=self._s_period[j],
            delay_seconds=self._s_delay[j],
            first_period_end=self._s_first[j],
            last_period_end=None if last == _ALIVE else last,
            timezone=self._tz_names[self._loc_tz[loc]],
            latitude=self._loc_lat[loc],
            longitude=self._loc_lon[loc],
            provider=_PROVIDERS[self._provider_keys[self._loc_provider[loc]]].name,
            is_monitor=_PROVIDERS[self._provider_keys[self._loc_provider[loc]]].reference,
        )

    def _sensor_index(self, sensor_id: int) -> int:
        j = bisect.bisect_left(self._s_ids, int(sensor_id))
        if j == len(self._s_ids) or self._s_ids[j] != int(sensor_id):
            raise KeyError(sensor_id)
        return j

    def _location_index(self, location_id: int) -> int:
        i = bisect.bisect_left(self._loc_ids, int(location_id))
        if i == len(self._loc_ids) or self._loc_ids[i] != int(location_id):
            raise KeyError(location_id)
        return i

    def location_timezone(self, location_id: int) -> str:
        """The IANA time zone of a location (KeyError if there is none of that id)."""
        return self._tz_names[self._loc_tz[self._location_index(location_id)]]

    def has_location(self, location_id: int) -> bool:
        try:
            self._location_index(location_id)
        except KeyError:
            return False
        return True

    def has_sensor(self, sensor_id: int) -> bool:
        try:
            self._sensor_index(sensor_id)
        except KeyError:
            return False
        return True

    # -- time -----------------------------------------------------------------------------

    def _latest_end(self, j: int, t: int) -> int | None:
        period = self._s_period[j]
        end = min((t - self._s_delay[j]) // period * period, self._s_last[j])
        return end if end >= self._s_first[j] else None

    def latest(
        self, parameter_id: int, at: float | datetime, datetime_min: float | datetime | None = None
    ) -> list[dict[str, Any]]:
        """``/v3/parameters/{id}/latest`` at ``at``: every sensor's newest published reading,
        sorted by ``sensorsId``; with ``datetime_min`` only readings whose period end is later.
        """
        return self.latest_page(parameter_id, at, datetime_min=datetime_min, limit=None)[1]

    def latest_page(
        self,
        parameter_id: int,
        at: float | datetime,
        *,
        offset: int = 0,
        limit: int | None = 1000,
        datetime_min: float | datetime | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(how many results in all, the results from ``offset`` on, at most ``limit``)."""
        group = self._by_pid.get(int(parameter_id))
        if group is None:
            return 0, []
        t = math.floor(_epoch(at))
        floor_min = None if datetime_min is None else math.floor(_epoch(datetime_min))
        thresholds, everyone_from = self._thresholds(int(parameter_id), group, floor_min)
        if t >= everyone_from:
            keep: list[int] | range = range(len(thresholds))
        else:
            keep = [k for k, threshold in enumerate(thresholds) if threshold <= t]
        chosen = keep[offset:] if limit is None else keep[offset : offset + limit]
        indices, delays, periods, lasts = group.indices, group.delays, group.periods, group.lasts
        results = []
        for k in chosen:
            period = periods[k]
            end = min((t - delays[k]) // period * period, lasts[k])
            results.append(self._latest_record(indices[k], end))
        return len(keep), results

    def _thresholds(
        self, parameter_id: int, group: _ParameterSensors, floor_min: int | None
    ) -> tuple[list[float], float]:
        """Per sensor of the group, from when it is in ``latest`` (with a period end after
        ``floor_min``), and from when all are; cached per (parameter id, ``floor_min``).

        Sensor k is in at t when it has started (t >= first + delay) and, with a minimum,
        when its period end passed it: last > min and t - delay >= the first multiple of
        its period after min. The list is the same for every page of a cycle, so a page
        costs one comparison per sensor instead of the arithmetic.
        """
        key = (parameter_id, floor_min)
        with self._cache_lock:
            cached = self._threshold_cache.get(key)
        if cached is not None:
            return cached
        if floor_min is None:
            thresholds: list[float] = [
                first + delay for first, delay in zip(group.firsts, group.delays, strict=True)
            ]
        else:
            after = {p: (floor_min // p + 1) * p for p in set(group.periods)}
            thresholds = [
                delay + max(after[period], first) if last > floor_min else math.inf
                for delay, period, first, last in zip(
                    group.delays, group.periods, group.firsts, group.lasts, strict=True
                )
            ]
        result = (thresholds, max(thresholds, default=0))
        with self._cache_lock:
            if len(self._threshold_cache) >= 64:
                self._threshold_cache.pop(next(iter(self._threshold_cache)))
            self._threshold_cache[key] = result
        return result

    def _latest_record(self, j: int, end: int) -> dict[str, Any]:
        loc = self._s_loc[j]
        return {
            "datetime": self._stamp(end, self._loc_tz[loc]),
            "value": self._value(j, end),
            "coordinates": {"latitude": self._loc_lat[loc], "longitude": self._loc_lon[loc]},
            "sensorsId": self._s_ids[j],
            "locationsId": self._loc_ids[loc],
        }

    def published(
        self, parameter_ids: Iterable[int], start: float | datetime, end: float | datetime
    ) -> set[tuple[int, str]]:
        """Every (sensor id, period end ``YYYY-MM-DDTHH:MM:SSZ``) that was the latest reading
        of a sensor with one of these parameter ids at some instant in [start, end].

        That is each sensor's latest at ``start`` and every reading published after it up
        to ``end``; a dead sensor's frozen reading is in every window. Large windows make
        large sets: a day of the six parameters of the default world is about 3.6 million
        pairs (some 400 MB; period-end strings are shared, the tuples are not).
        """
        t0, t1 = math.floor(_epoch(start)), math.floor(_epoch(end))
        if t1 < t0:
            raise ValueError("end is before start")
        out: set[tuple[int, str]] = set()
        utc = self._utc
        for pid in sorted({int(p) for p in parameter_ids}):
            group = self._by_pid.get(pid)
            if group is None:
                continue
            for k, j in enumerate(group.indices):
                period, delay, first, last = (
                    group.periods[k], group.delays[k], group.firsts[k], group.lasts[k],
                )  # fmt: skip
                high = min((t1 - delay) // period * period, last)
                if high < first:
                    continue
                low = max(min((t0 - delay) // period * period, last), first)
                sid = self._s_ids[j]
                for stamp_end in range(low, high + 1, period):
                    out.add((sid, utc(stamp_end)))
        return out

    def readings(
        self,
        sensor_id: int,
        start_end: datetime | float,
        end_end: datetime | float,
        *,
        at: float | datetime | None = None,
    ) -> list[tuple[datetime, float | None]]:
        """(period end, value) of every period of the sensor ending in [start_end, end_end]
        (both included), within its life; with ``at``, only those published by then."""
        j = self._sensor_index(sensor_id)
        period = self._s_period[j]
        low = max(-(-math.ceil(_epoch(start_end)) // period) * period, self._s_first[j])
        high = min(math.floor(_epoch(end_end)) // period * period, self._s_last[j])
        if at is not None:
            newest = self._latest_end(j, math.floor(_epoch(at)))
            high = min(high, newest if newest is not None else low - period)
        if high < low:
            return []
        ends = range(low, high + 1, period)
        values = self._values(j, ends)
        return [(datetime.fromtimestamp(e, UTC), v) for e, v in zip(ends, values, strict=True)]

    # -- values ---------------------------------------------------------------------------

    def _value(self, j: int, end: int) -> float | None:
        """The value of sensor index ``j`` for the period ending at ``end``: a site level, a
        daily cycle in local solar time, a day-to-day swing of the location, and noise."""
        h = _mix(self._salt + self._s_ids[j] * 0x1_0000_0000 + end)
        r = ((h * 0x2545F4914F6CDD1D) & _M64) >> 44
        if r < self._sentinel_cut:
            return None if r < self._null_cut else -9999.0
        amplitude, peak, per_radian, digits = self._models[self._s_pid[j]]
        loc = self._s_loc[j]
        day, rest = divmod(end, DAY)
        g0, g1 = self._swing(loc, day), self._swing(loc, day + 1)
        hour = rest / 3600.0 + self._loc_lon[loc] / 15.0
        value = (
            self._s_base[j]
            * (1.0 + amplitude * math.cos((hour - peak) / per_radian))
            * math.exp(0.35 * (g0 + (g1 - g0) * (rest / DAY)) + 0.12 * _gauss(h))
        )
        return round(value, digits)

    def _swing(self, loc: int, day: int) -> float:
        """The location's weather of a day: a standard normal number, shared by its sensors."""
        key = loc * 0x1_0000_0000 + day
        swing = self._swings.get(key)
        if swing is None:
            if len(self._swings) > 500_000:
                self._swings.clear()
            swing = self._swings[key] = _gauss(_mix(self._day_salt + key))
        return swing

    def _values(self, j: int, ends: Iterable[int]) -> list[float | None]:
        return [self._value(j, end) for end in ends]

    # -- time stamps ----------------------------------------------------------------------

    def _utc(self, end: int) -> str:
        text = self._utc_strings.get(end)
        if text is None:
            if len(self._utc_strings) > 200_000:
                self._utc_strings.clear()
            text = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._utc_strings[end] = text
        return text

    def _stamp(self, end: int, tz: int) -> dict[str, str]:
        """``{"utc": "...Z", "local": "...+hh:mm"}`` of an instant in time zone number ``tz``."""
        pair = self._stamps.get((tz, end))
        if pair is None:
            if len(self._stamps) > 200_000:
                self._stamps.clear()
            local = datetime.fromtimestamp(end, self._zones[tz]).isoformat(timespec="seconds")
            pair = self._stamps[(tz, end)] = (self._utc(end), local)
        return {"utc": pair[0], "local": pair[1]}

    # -- API-shaped objects ---------------------------------------------------------------

    def location_objects(self, at: float | datetime | None = None) -> list[dict[str, Any]]:
        """Every location as ``/v3/locations`` gives it (with its sensors), by id.

        ``datetimeFirst``/``datetimeLast`` are as of ``at`` (default: the profile's
        ``reference_time``).
        """
        t = math.floor(_epoch(at if at is not None else self.profile.reference_time))
        return [self._location_object(i, t) for i in range(len(self._loc_ids))]

    def location_object(
        self, location_id: int, at: float | datetime | None = None, distance: float | None = None
    ) -> dict[str, Any]:
        """One location (KeyError if there is none of that id)."""
        t = math.floor(_epoch(at if at is not None else self.profile.reference_time))
        return self._location_object(self._location_index(location_id), t, distance)

    def _location_object(self, i: int, t: int, distance: float | None = None) -> dict[str, Any]:
        region = _REGIONS[self._loc_region[i]]
        provider = _PROVIDERS[self._provider_keys[self._loc_provider[i]]]
        country_id, country_name = _COUNTRIES[region.iso]
        lat, lon = self._loc_lat[i], self._loc_lon[i]
        tz = self._loc_tz[i]
        sensors = range(self._loc_first_sensor[i], self._loc_first_sensor[i + 1])
        firsts = [self._s_first[j] for j in sensors]
        lasts = [e for e in (self._latest_end(j, t) for j in sensors) if e is not None]
        owner = (
            (4, "Unknown Governmental Organization") if provider.reference else (1, "OpenAQ admin")
        )
        return {
            "id": self._loc_ids[i],
            "name": self._location_name(i, provider),
            "locality": None,
            "timezone": self._tz_names[tz],
            "country": {"id": country_id, "code": region.iso, "name": country_name},
            "owner": {"id": owner[0], "name": owner[1]},
            "provider": {"id": provider.id, "name": provider.name},
            "isMobile": False,
            "isMonitor": provider.reference,
            "instruments": [{"id": provider.instrument[0], "name": provider.instrument[1]}],
            "sensors": [self._sensor_summary(j) for j in sensors],
            "coordinates": {"latitude": lat, "longitude": lon},
            "licenses": None,
            "bounds": [lon, lat, lon, lat],
            "distance": distance,
            "datetimeFirst": self._stamp(min(firsts), tz) if lasts else None,
            "datetimeLast": self._stamp(max(lasts), tz) if lasts else None,
        }

    def _location_name(self, i: int, provider: _Provider) -> str:
        h = _mix(self._salt ^ (i * 0x9E3779B97F4A7C15 & _M64))
        parts = [_SYLLABLES[(h >> (8 * k)) % len(_SYLLABLES)] for k in range(2 + (h >> 40) % 2)]
        place = "".join(parts).capitalize()
        suffix = _SUFFIXES[(h >> 48) % len(_SUFFIXES)]
        if provider.reference:
            return f"{place} {suffix}"
        return f"{place} {suffix} ({provider.name} {h >> 52:03x})"

    def _sensor_summary(self, j: int) -> dict[str, Any]:
        pid = self._s_pid[j]
        spec = PARAMETERS[pid]
        return {
            "id": self._s_ids[j],
            "name": f"{spec.name} {spec.units}",
            "parameter": {
                "id": pid,
                "name": spec.name,
                "units": spec.units,
                "displayName": spec.display_name,
            },
        }

    def sensor_object(self, sensor_id: int, at: float | datetime) -> dict[str, Any]:
        """``/v3/sensors/{id}`` at ``at`` (KeyError if there is no such sensor)."""
        return self._sensor_object(self._sensor_index(sensor_id), math.floor(_epoch(at)))

    def _sensor_object(self, j: int, t: int) -> dict[str, Any]:
        loc = self._s_loc[j]
        tz = self._loc_tz[loc]
        end = self._latest_end(j, t)
        sensor = self._sensor_summary(j)
        latest = None
        if end is not None:
            record = self._latest_record(j, end)
            latest = {k: record[k] for k in ("datetime", "value", "coordinates")}
        sensor.update(
            {
                "datetimeFirst": self._stamp(self._s_first[j], tz) if end is not None else None,
                "datetimeLast": self._stamp(end, tz) if end is not None else None,
                "coverage": None,
                "latest": latest,
                "summary": None,
            }
        )
        return sensor

    def location_sensors(self, location_id: int, at: float | datetime) -> list[dict[str, Any]]:
        """``/v3/locations/{id}/sensors`` at ``at`` (KeyError if there is no such location)."""
        i = self._location_index(location_id)
        t = math.floor(_epoch(at))
        return [
            self._sensor_object(j, t)
            for j in range(self._loc_first_sensor[i], self._loc_first_sensor[i + 1])
        ]

    def location_latest(
        self,
        location_id: int,
        at: float | datetime,
        datetime_min: float | datetime | None = None,
    ) -> list[dict[str, Any]]:
        """``/v3/locations/{id}/latest`` at ``at``, by sensor id (KeyError: no such location)."""
        i = self._location_index(location_id)
        t = math.floor(_epoch(at))
        floor_min = None if datetime_min is None else math.floor(_epoch(datetime_min))
        out = []
        for j in range(self._loc_first_sensor[i], self._loc_first_sensor[i + 1]):
            end = self._latest_end(j, t)
            if end is not None and (floor_min is None or end > floor_min):
                out.append(self._latest_record(j, end))
        return out

    def measurements(
        self,
        sensor_id: int,
        at: float | datetime,
        *,
        datetime_from: float | datetime | None = None,
        datetime_to: float | datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """``/v3/sensors/{id}/measurements`` at ``at``: the published readings with
        ``datetime_from < period end <= datetime_to``, oldest first (KeyError: no such sensor).
        """
        j = self._sensor_index(sensor_id)
        period = self._s_period[j]
        newest = self._latest_end(j, math.floor(_epoch(at)))
        if newest is None:
            return []
        low = self._s_first[j]
        if datetime_from is not None:
            low = max(low, (math.floor(_epoch(datetime_from)) // period + 1) * period)
        high = newest
        if datetime_to is not None:
            high = min(high, math.floor(_epoch(datetime_to)) // period * period)
        low += offset * period
        high = min(high, low + (limit - 1) * period)
        if high < low:
            return []
        ends = range(low, high + 1, period)
        spec = PARAMETERS[self._s_pid[j]]
        parameter = {
            "id": self._s_pid[j],
            "name": spec.name,
            "units": spec.units,
            "displayName": spec.display_name,
        }
        tz = self._loc_tz[self._s_loc[j]]
        label = f"{period // 3600:02d}:{period % 3600 // 60:02d}:{period % 60:02d}"
        out = []
        for end, value in zip(ends, self._values(j, ends), strict=True):
            span = {
                "datetimeFrom": self._stamp(end - period, tz),
                "datetimeTo": self._stamp(end, tz),
            }
            out.append(
                {
                    "value": value,
                    "flagInfo": {"hasFlags": False},
                    "parameter": dict(parameter),
                    "period": {"label": "raw", "interval": label, **span},
                    "coordinates": None,
                    "summary": None,
                    "coverage": {
                        "expectedCount": 1,
                        "expectedInterval": label,
                        "observedCount": 1,
                        "observedInterval": label,
                        "percentComplete": 100.0,
                        "percentCoverage": 100.0,
                        "datetimeFrom": dict(span["datetimeFrom"]),
                        "datetimeTo": dict(span["datetimeTo"]),
                    },
                }
            )
        return out

    def find_locations(
        self,
        *,
        iso: str | None = None,
        countries_id: Iterable[int] | None = None,
        providers_id: Iterable[int] | None = None,
        parameters_id: Iterable[int] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        center: tuple[float, float] | None = None,
        radius: float | None = None,
        monitor: bool | None = None,
        mobile: bool | None = None,
    ) -> list[tuple[int, float | None]]:
        """(location id, distance in metres or None) of the locations that pass every filter
        given, by id: ``/v3/locations``' filters (``bbox`` is minx, miny, maxx, maxy;
        ``center`` is latitude, longitude with ``radius`` in metres)."""
        if mobile:  # the world has only fixed locations
            return []
        chosen: list[int] | range = range(len(self._loc_ids))
        lats, lons = self._loc_lat, self._loc_lon
        if iso is not None:
            regions = {n for n, r in enumerate(_REGIONS) if r.iso == iso}
            chosen = [i for i in chosen if self._loc_region[i] in regions]
        if countries_id is not None:
            wanted = set(countries_id)
            regions = {n for n, r in enumerate(_REGIONS) if _COUNTRIES[r.iso][0] in wanted}
            chosen = [i for i in chosen if self._loc_region[i] in regions]
        if providers_id is not None:
            wanted = set(providers_id)
            numbers = {
                n for n, key in enumerate(self._provider_keys) if _PROVIDERS[key].id in wanted
            }
            chosen = [i for i in chosen if self._loc_provider[i] in numbers]
        if parameters_id is not None:
            mask = 0
            for pid in parameters_id:
                if 0 <= pid < 63:
                    mask |= 1 << pid
            chosen = [i for i in chosen if self._loc_mask[i] & mask]
        if monitor is not None:
            numbers = {
                n
                for n, key in enumerate(self._provider_keys)
                if _PROVIDERS[key].reference == monitor
            }
            chosen = [i for i in chosen if self._loc_provider[i] in numbers]
        if bbox is not None:
            minx, miny, maxx, maxy = bbox
            chosen = [i for i in chosen if miny <= lats[i] <= maxy and minx <= lons[i] <= maxx]
        if center is None or radius is None:
            return [(self._loc_ids[i], None) for i in chosen]
        lat0, lon0 = center
        reach = radius / EARTH_RADIUS_METRES * 180 / math.pi * 1.01
        out = []
        for i in chosen:
            if abs(lats[i] - lat0) > reach:
                continue
            distance = _haversine(lat0, lon0, lats[i], lons[i])
            if distance <= radius:
                out.append((self._loc_ids[i], round(distance, 3)))
        return out

    def __repr__(self) -> str:
        return (
            f"World({self.profile!r}: {self.location_count} locations, {self.sensor_count} sensors)"
        )


class _ParameterSensors(NamedTuple):
    """The sensors of one parameter id, in id order, with the fields ``latest`` reads."""

    indices: list[int]
    delays: list[int]
    periods: list[int]
    firsts: list[int]
    lasts: list[int]


# -- helpers -------------------------------------------------------------------------------


def _mix(x: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _gauss(h: int) -> float:
    """A roughly standard normal number from 63 bits of a hash (sum of three uniforms)."""
    return (((h & 0x1FFFFF) + ((h >> 21) & 0x1FFFFF) + ((h >> 42) & 0x1FFFFF)) / _U21 - 1.5) * 2.0


def _cumulative(weights: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for weight in weights:
        total += weight
        yield total


def _weighted(rng: random.Random, pairs: Iterable[tuple[Any, float]]) -> Any:
    pairs = list(pairs)
    pick = rng.random() * sum(w for _, w in pairs)
    for value, weight in pairs:
        pick -= weight
        if pick < 0:
            return value
    return pairs[-1][0]


def _sensor_names(rng: random.Random, provider: _Provider) -> list[str]:
    """The parameter names of a new location's sensors (1-6, no name twice)."""
    if provider.only:
        return list(provider.only)
    if not provider.reference:
        count = _weighted(rng, _LOW_COST_COUNTS)
        return ["pm25", "pm10", "no2" if provider.id == _PROVIDERS["clarity"].id else "o3"][:count]
    count = _weighted(rng, _REFERENCE_COUNTS)
    left = dict(_NAME_WEIGHTS)
    names = []
    for _ in range(count):
        name = _weighted(rng, left.items())
        names.append(name)
        del left[name]
    return names


def _id_gap(rng: random.Random) -> int:
    """The step to the next location id: mostly small, sometimes a jump (ids are sparse)."""
    roll = rng.random()
    if roll < 0.70:
        return rng.randint(1, 5)
    if roll < 0.95:
        return rng.randint(6, 200)
    return rng.randint(200, 3000)


def _sensor_gap(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.70:
        return 1
    if roll < 0.90:
        return rng.randint(2, 40)
    return rng.randint(40, 2000)


def _epoch(moment: float | datetime) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a datetime must be timezone-aware")
        return moment.timestamp()
    return float(moment)


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_METRES * math.asin(min(1.0, math.sqrt(a)))
