"""The offline base map without Superset: TopoJSON decoding, the Web Mercator tile arithmetic
and the geometry a tile is drawn from (superset/aq_basemap.py, which runs in Superset's own
environment; its drawing needs Pillow and is tested through the running Superset in
tests/integration/test_dashboards.py). Checked against facts that do not come from the module:
the TopoJSON specification's example, Mercator's formula in another form, surveyed extremes of
countries and the US-Canada border on the 49th parallel."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import runpy
import sys
import tarfile
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from aqi.core import environments
from aqi.core.environments import basemap_archive, ensure_basemap_archive
from aqi.core.errors import AqiError
from aqi.services.superset import BUNDLE_DIR, CONFIG_PATH

pytestmark = pytest.mark.unit

MODULE_PATH = CONFIG_PATH.parent / "aq_basemap.py"


def _load():
    spec = importlib.util.spec_from_file_location("aq_basemap", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["aq_basemap"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bm = _load()


@pytest.fixture(scope="module")
def basemap():
    archive = basemap_archive()
    if not archive.is_file():
        pytest.fail(f"{archive} is missing: run `aqi setup --only superset`")
    return bm.Basemap(archive)


# --- TopoJSON ----------------------------------------------------------------------------------

# the quantized example of the TopoJSON specification (section 2.1.2, "transform"), and the
# coordinates it stands for
SPEC_EXAMPLE = {
    "type": "Topology",
    "transform": {"scale": [0.0005000500050005, 0.00010001000100010001], "translate": [100, 0]},
    "objects": {},
    "arcs": [
        [[4000, 0], [1999, 9999], [2000, -9999], [2000, 9999]],
        [[0, 0], [0, 9999], [2000, 0], [0, -9999], [-2000, 0]],
    ],
}


def test_quantized_arcs_decode_to_the_specifications_coordinates() -> None:
    line, polygon = ([c for point in arc for c in point] for arc in bm.decode_arcs(SPEC_EXAMPLE))
    # LineString [[102, 0], [103, 1], [104, 0], [105, 1]]; Polygon [[100, 0], [100, 1], ...]
    assert line == pytest.approx([102, 0, 103, 1, 104, 0, 105, 1], abs=1e-3)
    assert polygon == pytest.approx([100, 0, 100, 1, 101, 1, 101, 0, 100, 0], abs=1e-3)


def test_a_ring_joins_arcs_and_a_negative_index_reverses_one() -> None:
    arcs = [[(0.0, 0.0), (1.0, 0.0)], [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]]
    # ~1 is arc 1 backwards; its first point (1, 0) is arc 0's last and is not repeated
    assert bm.ring_points(arcs, [0, ~1]) == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]
    square = {"type": "Polygon", "arcs": [[0, ~1]]}
    assert bm.polygons(square) == [[[0, ~1]]]
    assert sorted(bm.arc_uses({"type": "MultiPolygon", "arcs": [[[0, ~1]], [[1]]]})) == [0, 1, 1]


@pytest.mark.parametrize(
    ("member", "country", "surveyed", "tolerance"),
    [
        # mainland and Tasmania: Steep Point, South East Cape, Cape Byron, Cape York
        ("countries-110m.json", "Australia", (113.16, -43.64, 153.64, -10.69), 0.3),
        # Bjargtangar, Kotlutangi, Gerpir, Rifstangi
        ("countries-110m.json", "Iceland", (-24.53, 63.39, -13.50, 66.54), 0.3),
        ("countries-50m.json", "Iceland", (-24.53, 63.39, -13.50, 66.54), 0.15),
    ],
)
def test_a_countrys_decoded_bounds_are_its_surveyed_extremes(
    basemap, member: str, country: str, surveyed: tuple, tolerance: float
) -> None:
    bounds = bm.country_bounds(basemap.topology(member), country)
    assert bounds == pytest.approx(surveyed, abs=tolerance)


# --- Web Mercator tiles -------------------------------------------------------------------------


def test_tile_0_0_0_is_the_whole_mercator_world() -> None:
    west, south, east, north = bm.tile_bounds(0, 0, 0)
    assert (west, east) == (-180, 180)
    assert north == pytest.approx(85.0511287798) and south == pytest.approx(-85.0511287798)
    assert bm.tile_pixel(west, north, 0, 0, 0) == pytest.approx((0, 0))
    assert bm.tile_pixel(east, south, 0, 0, 0) == pytest.approx((256, 256))
    assert bm.tile_pixel(0, 0, 0, 0, 0) == pytest.approx((128, 128))


@pytest.mark.parametrize("lat", [-80, -45.5, -10, 0.0, 33.3, 49, 60, 84.9])
def test_the_projection_is_mercators_in_its_other_form(lat: float) -> None:
    # y = 0.5 - asinh(tan(lat)) / 2pi, the inverse Gudermannian instead of ln(tan(pi/4 + lat/2))
    _, y = bm.mercator(0, lat)
    assert y == pytest.approx(0.5 - math.asinh(math.tan(math.radians(lat))) / (2 * math.pi))


def test_tiles_tile_the_world_without_gaps() -> None:
    z = 3
    for x in range(2**z):
        for y in range(2**z):
            west, south, east, north = bm.tile_bounds(z, x, y)
            if x + 1 < 2**z:
                assert bm.tile_bounds(z, x + 1, y)[0] == pytest.approx(east)
            if y + 1 < 2**z:
                assert bm.tile_bounds(z, x, y + 1)[3] == pytest.approx(south)
            assert bm.tile_of((west + east) / 2, (north + south) / 2, z) == (x, y)
    assert not bm.valid_tile(3, 8, 0) and not bm.valid_tile(20, 0, 0) and bm.valid_tile(19, 0, 0)


# --- what a tile is drawn from -----------------------------------------------------------------


def _near_a_line(runs: list, point: tuple[float, float], within: float) -> bool:
    px, py = point
    for run in runs:
        for (x0, y0), (x1, y1) in pairwise(run):
            dx, dy = x1 - x0, y1 - y0
            t = 0.0 if dx == dy == 0 else ((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy)
            t = max(0.0, min(1.0, t))
            if math.hypot(px - (x0 + t * dx), py - (y0 + t * dy)) <= within:
                return True
    return False


def _inside(polygons: list, point: tuple[float, float]) -> bool:
    """Even-odd rule over every ring (a hole flips it back)."""
    px, py = point
    inside = False
    for polygon in polygons:
        for ring in polygon:
            for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=False):
                if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * (x1 - x0) / (y1 - y0):
                    inside = not inside
    return inside


@pytest.mark.parametrize("z", [2, 4, 7])
def test_the_49th_parallel_is_a_border_and_not_a_coast(basemap, z: int) -> None:
    # the US-Canada border runs along 49 degrees north from Lake of the Woods to the Pacific
    scale = basemap.scale(z)
    for lon in (-118.0, -110.0, -100.0):
        tile = bm.tile_of(lon, 49.0, z)
        pixel = bm.tile_pixel(lon, 49.0, z, *tile)
        assert _near_a_line(scale.lines(z, *tile, "border"), pixel, within=1.0), (lon, z)
        assert not _near_a_line(scale.lines(z, *tile, "coast"), pixel, within=3.0), (lon, z)
        assert _inside(scale.areas(z, *tile), pixel)


@pytest.mark.parametrize(
    ("lon", "lat", "land"),
    [
        (-98.0, 38.5, True),  # Kansas
        (2.35, 48.86, True),  # Paris
        (133.0, -25.0, True),  # the middle of Australia
        (-40.0, 30.0, False),  # the Atlantic
        (-150.0, 0.0, False),  # the Pacific
        (51.0, 42.0, False),  # the Caspian Sea (a hole in Eurasia)
    ],
)
def test_land_and_water_fall_where_they_are(basemap, lon: float, lat: float, land: bool) -> None:
    for z in (1, 4):
        tile = bm.tile_of(lon, lat, z)
        assert _inside(basemap.scale(z).areas(z, *tile), bm.tile_pixel(lon, lat, z, *tile)) is land


def test_a_ring_across_the_antimeridian_draws_no_line_across_the_world(basemap) -> None:
    # Chukotka (Russia) and Fiji cross 180 degrees; their points jump from 179.x to -179.x
    for z in (0, 3):
        scale = basemap.scale(z)
        for kind in ("coast", "border"):
            for run in scale.lines(z, 0, 0, kind):
                widths = [abs(b[0] - a[0]) for a, b in pairwise(run)]
                assert max(widths, default=0) < 256 * 2**z / 4, kind
    # and the land east of 180 shows at the world's west edge: Chukotka's tip at -170, 66
    z = 2
    tile = bm.tile_of(-172.0, 65.5, z)
    assert _inside(basemap.scale(z).areas(z, *tile), bm.tile_pixel(-172.0, 65.5, z, *tile))


def test_antarctica_is_land_down_to_the_maps_edge(basemap) -> None:
    for z in (0, 3):
        tile = bm.tile_of(0.0, -84.0, z)
        assert _inside(basemap.scale(z).areas(z, *tile), bm.tile_pixel(0.0, -84.0, z, *tile))


# --- installing the data, configuring Superset --------------------------------------------------


def test_the_archive_is_the_pinned_world_atlas_with_its_license(basemap) -> None:
    assert basemap.archive == basemap_archive()
    assert basemap.archive.name == f"world-atlas-{bm.VERSION}.tgz"
    assert hashlib.sha256(basemap.archive.read_bytes()).hexdigest() == bm.ARCHIVE_SHA256
    with tarfile.open(basemap.archive) as tar:
        package = yaml.safe_load(tar.extractfile("package/package.json"))
        names = set(tar.getnames())
    assert (package["name"], package["version"], package["license"]) == (
        bm.PACKAGE, bm.VERSION, "ISC"
    )  # fmt: skip
    assert {f"package/{member}" for _, member in bm.SCALES} <= names


def test_an_archive_that_does_not_match_the_pin_is_not_installed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(environments, "superset_env_dir", lambda: tmp_path / "venv")

    def tampered(spec: str, folder: Path) -> Path:
        assert spec == f"world-atlas@{bm.VERSION}"
        out = folder / "world-atlas.tgz"
        out.write_bytes(b"not the archive")
        return out

    with pytest.raises(AqiError, match="not the pinned"):
        ensure_basemap_archive(echo=lambda line: None, pack=tampered)
    assert not basemap_archive().exists()
    assert list(basemap_archive().parent.iterdir()) == []  # no staging left behind


def test_a_good_archive_is_installed_once(tmp_path, monkeypatch) -> None:
    real = basemap_archive()
    if not real.is_file():
        pytest.fail(f"{real} is missing: run `aqi setup --only superset`")
    monkeypatch.setattr(environments, "superset_env_dir", lambda: tmp_path / "venv")
    calls = []

    def pack(spec: str, folder: Path) -> Path:
        calls.append(spec)
        out = folder / "world-atlas-2.0.2.tgz"
        out.write_bytes(real.read_bytes())
        return out

    lines: list[str] = []
    assert ensure_basemap_archive(echo=lines.append, pack=pack) == basemap_archive()
    assert ensure_basemap_archive(echo=lines.append, pack=pack) == basemap_archive()
    assert calls == [f"world-atlas@{bm.VERSION}"] and "already in" in lines[-1]
    assert basemap_archive().read_bytes() == real.read_bytes()


def test_the_map_draws_on_the_offline_tiles_and_offers_osm(tmp_path, monkeypatch) -> None:
    archive = tmp_path / "world-atlas.tgz"
    archive.write_bytes(b"")
    monkeypatch.setenv("SUPERSET_SECRET_KEY", "k" * 42)
    monkeypatch.setenv("SUPERSET_METADATA_URI", "postgresql+psycopg2://aq:pw@127.0.0.1:1/superset")
    monkeypatch.setenv("SUPERSET_HOME", str(tmp_path))
    monkeypatch.setenv("SUPERSET_BASEMAP_ARCHIVE", str(tmp_path / "missing.tgz"))
    with pytest.raises(RuntimeError, match="SUPERSET_BASEMAP_ARCHIVE: no file at .*aqi setup"):
        runpy.run_path(str(CONFIG_PATH))
    monkeypatch.setenv("SUPERSET_BASEMAP_ARCHIVE", str(archive))
    config = runpy.run_path(str(CONFIG_PATH))
    styles = [url for url, _label in config["DECKGL_BASE_MAP"]]
    # the first is the default of a new map; a path without a host is Superset's own origin
    assert styles[0] == "tile:///aq-tiles/{z}/{x}/{y}.png" == bm.STYLE
    assert any("tile.openstreetmap.org" in url for url in styles[1:])
    assert callable(config["FLASK_APP_MUTATOR"])
    chart = yaml.safe_load((BUNDLE_DIR / "charts" / "latest_pm25_map.yaml").read_text())
    assert chart["params"]["mapbox_style"] == bm.STYLE
