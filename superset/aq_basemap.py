"""The offline base map of the dashboards: land, coastlines and country borders as map tiles.

Superset serves them itself, at ``/aq-tiles/{z}/{x}/{y}.png``: 256-pixel PNG tiles in Web
Mercator (the "slippy map" scheme of OpenStreetMap and deck.gl's TileLayer), drawn with Pillow
from Natural Earth's Admin 0 countries as TopoJSON in the npm package ``world-atlas`` (pinned,
installed once by ``aqi setup --only superset``; the compose image downloads the same archive
at build time). Nothing is fetched when a tile is drawn, so the map has borders without the
internet. Scales: 1:110m up to zoom 2, 1:50m up to zoom 5, 1:10m beyond, each decoded on the
first tile that needs it; drawn tiles are kept in memory (LRU) and cached by the browser.

superset_config.py loads this module next to itself (no package of the main environment) and
hands :func:`app_mutator` to Superset as ``FLASK_APP_MUTATOR``. Only the web part imports
Flask and only drawing imports Pillow (both are in Superset's environment), so the TopoJSON
decoding and the tile arithmetic import nothing but the standard library.

License of the data: world-atlas is ISC (Copyright 2013-2019 Michael Bostock); Natural Earth's
data is in the public domain.
"""

from __future__ import annotations

import functools
import io
import json
import math
import tarfile
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

#: the npm package the geometry comes from, and what its archive must hash to
PACKAGE = "world-atlas"
VERSION = "2.0.2"
ARCHIVE_SHA256 = "032e7765f2ce00edaeafec23ff22bc3b77e42987c257da944cc585b452c05b97"
ARCHIVE_NAME = f"{PACKAGE}-{VERSION}.tgz"
#: where Superset serves the tiles, and the chart style (DECKGL_BASE_MAP) that draws them: a
#: same-origin path, so it works on any host and port (deck.gl fetches it relative to the page)
URL_PREFIX = "/aq-tiles"
STYLE = f"tile://{URL_PREFIX}/{{z}}/{{x}}/{{y}}.png"
TILE_SIZE = 256
#: deck.gl's TileLayer of Superset asks for zoom 0..19
MAX_ZOOM = 19
#: Web Mercator stops at the latitude where the world is square
MAX_LATITUDE = math.degrees(math.atan(math.sinh(math.pi)))  # 85.0511287798...

#: the colours of a tile (RGB); the screenshot check looks for them in the map
COLOURS = {
    "water": (214, 228, 239),
    "land": (247, 245, 238),
    "coast": (122, 152, 178),
    "border": (112, 104, 128),
}
#: line widths in pixels of a tile
COAST_WIDTH = 1.25
BORDER_WIDTH = 1.5
#: the data set of each zoom level: (last zoom, file in the archive)
SCALES = ((2, "countries-110m.json"), (5, "countries-50m.json"), (MAX_ZOOM, "countries-10m.json"))
_SUPERSAMPLE = 4  # drawn at 4x and scaled down: smooth lines, widths of a fraction of a pixel
_CACHE_TILES = 2048


# --- TopoJSON --------------------------------------------------------------------------------


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    """The arcs of a TopoJSON topology as (longitude, latitude) points.

    A quantized topology (with ``transform``) stores each arc's first position absolutely and
    the others as differences to the previous one, in integer steps of ``scale`` from
    ``translate`` (TopoJSON specification, 2.1.2 and 2.2).
    """
    transform = topology.get("transform")
    arcs = []
    for arc in topology["arcs"]:
        if transform is None:
            arcs.append([(float(p[0]), float(p[1])) for p in arc])
            continue
        (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
        x = y = 0
        points = []
        for position in arc:
            x += position[0]
            y += position[1]
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring_points(
    arcs: Sequence[Sequence[tuple[float, float]]], indices: Sequence[int]
) -> list[tuple[float, float]]:
    """One ring (or line) from arc indices: ``~i`` (negative) is arc ``i`` reversed, and each
    arc after the first drops its first point, the previous arc's last (specification 2.2)."""
    points: list[tuple[float, float]] = []
    for index in indices:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc[1:] if points else arc)
    return points


def polygons(geometry: dict) -> list[list[list[int]]]:
    """The polygons of a geometry (each a list of rings of arc indices; the first ring is the
    outside, the others holes), for Polygon, MultiPolygon and GeometryCollection."""
    kind = geometry.get("type")
    if kind == "Polygon":
        return [geometry["arcs"]]
    if kind == "MultiPolygon":
        return list(geometry["arcs"])
    if kind == "GeometryCollection":
        return [p for child in geometry["geometries"] for p in polygons(child)]
    return []


def arc_uses(geometry: dict) -> Iterator[int]:
    """Every arc (as its non-negative index) of a geometry's rings, once per use."""
    for polygon in polygons(geometry):
        for ring in polygon:
            for index in ring:
                yield index if index >= 0 else ~index


def country_bounds(topology: dict, name: str) -> tuple[float, float, float, float]:
    """(west, south, east, north) of a country of world-atlas, by its ``properties.name``."""
    arcs = decode_arcs(topology)
    (country,) = [
        g
        for g in topology["objects"]["countries"]["geometries"]
        if (g.get("properties") or {}).get("name") == name
    ]
    points = [arcs[i][j] for i in set(arc_uses(country)) for j in range(len(arcs[i]))]
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    return min(lons), min(lats), max(lons), max(lats)


# --- Web Mercator tiles ----------------------------------------------------------------------


def mercator(lon: float, lat: float) -> tuple[float, float]:
    """(x, y) of a point on the Web Mercator square: 0..1 west to east and north to south."""
    lat = max(-MAX_LATITUDE, min(MAX_LATITUDE, lat))
    x = (lon + 180.0) / 360.0
    y = 0.5 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / (2 * math.pi)
    return x, y


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of tile ``z/x/y``."""
    n = 2**z

    def lat(row: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def tile_pixel(lon: float, lat: float, z: int, x: int, y: int) -> tuple[float, float]:
    """Where a point falls in tile ``z/x/y``, in pixels from its top-left corner (inside the
    tile when both are in 0..256)."""
    mx, my = mercator(lon, lat)
    n = 2**z
    return (mx * n - x) * TILE_SIZE, (my * n - y) * TILE_SIZE


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(x, y) of the tile of zoom ``z`` that holds a point."""
    mx, my = mercator(lon, lat)
    n = 2**z
    return min(n - 1, int(mx * n)), min(n - 1, int(my * n))


def valid_tile(z: int, x: int, y: int) -> bool:
    return 0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z


# --- the geometry of one scale, projected once -------------------------------------------------


@dataclass
class _Shape:
    """Points on the Mercator square (flat: x0, y0, x1, y1, ...) and their bounding box."""

    xy: array  # of doubles: a quarter of a list of floats' memory (1:10m: ~480,000 points)
    box: tuple[float, float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        xs, ys = self.xy[0::2], self.xy[1::2]
        self.box = (min(xs), min(ys), max(xs), max(ys))

    def meets(self, box: tuple[float, float, float, float], dx: float = 0.0) -> bool:
        """Whether the bounding box, moved ``dx`` east, meets ``box``."""
        return not (
            self.box[2] + dx < box[0] or self.box[0] + dx > box[2] or self.box[3] < box[1]
            or self.box[1] > box[3]
        )  # fmt: skip


def _shape(points: Sequence[tuple[float, float]]) -> _Shape:
    flat: list[float] = []
    for lon, lat in points:
        _, y = mercator(0.0, lat)
        flat.extend(((lon + 180.0) / 360.0, y))  # longitudes past 180 stay past the edge
    return _Shape(array("d", flat))


def _unwrap(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points with continuous longitudes. world-atlas is spherical: a ring that crosses the
    antimeridian (Russia, Fiji) jumps from 179.x to -179.x, which on a flat map is a line
    across the world; unwrapped, it goes on to 180.x instead."""
    out, shift = [points[0]], 0.0
    for (before, _), (lon, lat) in pairwise(points):
        if lon - before > 180:
            shift -= 360
        elif lon - before < -180:
            shift += 360
        out.append((lon + shift, lat))
    return out


def _ring(points: Sequence[tuple[float, float]]) -> _Shape:
    """A ring on the Mercator square. One around a pole (Antarctica) does not close once
    unwrapped: it ends 360 degrees from where it starts, and is closed along the pole."""
    ring = _unwrap(points)
    if abs(ring[-1][0] - ring[0][0]) > 180:
        pole = -90.0 if sum(lat for _, lat in ring) < 0 else 90.0
        ring += [(ring[-1][0], pole), (ring[0][0], pole)]
    return _shape(ring)


def _lines(points: Sequence[tuple[float, float]]) -> list[_Shape]:
    """A line on the Mercator square, cut where it crosses the antimeridian."""
    pieces, piece = [], [points[0]]
    for before, point in pairwise(points):
        if abs(point[0] - before[0]) > 180:
            pieces.append(piece)
            piece = []
        piece.append(point)
    pieces.append(piece)
    return [_shape(p) for p in pieces if len(p) >= 2]


@dataclass
class Scale:
    """One world-atlas file, projected: land polygons (outside, holes), coastlines, borders.

    Coastlines are the arcs of the ``land`` object (world-atlas merges the countries into it,
    so it shares their arcs); borders are the countries' other arcs, those between two of them.
    """

    land: list[list[_Shape]]
    coasts: list[_Shape]
    borders: list[_Shape]

    @classmethod
    def from_topology(cls, topology: dict) -> Scale:
        arcs = decode_arcs(topology)
        objects = topology["objects"]
        land = [
            [_ring(ring_points(arcs, ring)) for ring in polygon]
            for polygon in polygons(objects["land"])
        ]
        coast_ids = set(arc_uses(objects["land"]))
        border_ids = set(arc_uses(objects["countries"])) - coast_ids
        return cls(
            land=land,
            coasts=[s for i in sorted(coast_ids) for s in _lines(arcs[i])],
            borders=[s for i in sorted(border_ids) for s in _lines(arcs[i])],
        )

    def lines(self, z: int, x: int, y: int, kind: str) -> list[list[tuple[float, float]]]:
        """The coastlines or borders (``kind``) that cross tile ``z/x/y``, in tile pixels, cut
        into runs of segments near the tile (points far outside would only cost time)."""
        shapes = self.coasts if kind == "coast" else self.borders
        box, to_pixel = _tile_frame(z, x, y)
        runs = []
        for shape in shapes:
            if not shape.meets(box):
                continue
            xy, run = shape.xy, []
            for i in range(0, len(xy) - 2, 2):
                x0, y0, x1, y1 = xy[i], xy[i + 1], xy[i + 2], xy[i + 3]
                near = not (
                    max(x0, x1) < box[0] or min(x0, x1) > box[2] or max(y0, y1) < box[1]
                    or min(y0, y1) > box[3]
                )  # fmt: skip
                if near:
                    if not run:
                        run.append(to_pixel(x0, y0))
                    run.append(to_pixel(x1, y1))
                elif run:
                    runs.append(run)
                    run = []
            if run:
                runs.append(run)
        return runs

    def areas(self, z: int, x: int, y: int) -> list[list[list[tuple[float, float]]]]:
        """The land polygons (rings in tile pixels, the outside first) that meet the tile."""
        box, to_pixel = _tile_frame(z, x, y)
        found = []
        for polygon in self.land:
            for dx in (0.0, -1.0, 1.0):  # a ring unwrapped past 180 shows at the other edge too
                if not polygon[0].meets(box, dx):
                    continue
                found.append(
                    [
                        [to_pixel(r.xy[i] + dx, r.xy[i + 1]) for i in range(0, len(r.xy), 2)]
                        for r in polygon
                        if r.meets(box, dx)
                    ]
                )
        return found


def _tile_frame(
    z: int, x: int, y: int
) -> tuple[tuple[float, float, float, float], Callable[[float, float], tuple[float, float]]]:
    """The tile's box on the Mercator square (with a margin of 4 pixels for line widths) and
    the function from the square to the tile's pixels."""
    n = 2**z
    size = TILE_SIZE * n
    margin = 4 / size
    box = (x / n - margin, y / n - margin, (x + 1) / n + margin, (y + 1) / n + margin)

    def to_pixel(mx: float, my: float) -> tuple[float, float]:
        return mx * size - x * TILE_SIZE, my * size - y * TILE_SIZE

    return box, to_pixel


# --- the archive and the tiles ---------------------------------------------------------------


class Basemap:
    """The tiles of one world-atlas archive (``.tgz`` as npm packs it); thread-safe."""

    def __init__(self, archive: str | Path) -> None:
        self.archive = Path(archive)
        self._scales: dict[str, Scale] = {}
        self._lock = threading.Lock()
        self.tile_png = functools.lru_cache(maxsize=_CACHE_TILES)(self._draw_png)

    def topology(self, member: str) -> dict:
        """One JSON file of the package (``countries-110m.json``, ...)."""
        with tarfile.open(self.archive, "r:gz") as tar:
            handle = tar.extractfile(f"package/{member}")
            if handle is None:
                raise FileNotFoundError(f"{self.archive} has no package/{member}")
            return json.load(handle)

    def scale(self, z: int) -> Scale:
        member = next(name for last, name in SCALES if z <= last)
        with self._lock:
            if member not in self._scales:
                self._scales[member] = Scale.from_topology(self.topology(member))
            return self._scales[member]

    def draw(self, z: int, x: int, y: int):  # -> PIL.Image.Image
        """Tile ``z/x/y`` as an RGB image: water, land, coastlines, then borders on top."""
        from PIL import Image, ImageDraw

        if not valid_tile(z, x, y):
            raise ValueError(f"no tile {z}/{x}/{y}")
        scale, k = self.scale(z), _SUPERSAMPLE
        image = Image.new("RGB", (TILE_SIZE * k, TILE_SIZE * k), COLOURS["water"])
        pen = ImageDraw.Draw(image)
        for polygon in scale.areas(z, x, y):
            for i, ring in enumerate(polygon):
                if len(ring) >= 3:
                    colour = COLOURS["land"] if i == 0 else COLOURS["water"]
                    pen.polygon([(px * k, py * k) for px, py in ring], fill=colour)
        for kind, width in (("coast", COAST_WIDTH), ("border", BORDER_WIDTH)):
            for run in scale.lines(z, x, y, kind):
                pen.line(
                    [(px * k, py * k) for px, py in run], fill=COLOURS[kind],
                    width=max(1, round(width * k)), joint="curve",
                )  # fmt: skip
        return image.reduce(k)

    def _draw_png(self, z: int, x: int, y: int) -> bytes:
        out = io.BytesIO()
        self.draw(z, x, y).save(out, "PNG", compress_level=6)
        return out.getvalue()


def app_mutator(archive: str | Path) -> Callable:
    """For ``FLASK_APP_MUTATOR``: adds ``/aq-tiles/<z>/<x>/<y>.png`` to Superset's app.

    The tiles are public (Natural Earth's world, nothing of the project's data), like Superset's
    static files: no login, so the browser fetches them as plain images.
    """
    basemap = Basemap(archive)

    def mutate(app) -> None:
        from flask import Blueprint, Response, abort

        tiles = Blueprint("aq_basemap", __name__, url_prefix=URL_PREFIX)

        @tiles.route("/<int:z>/<int:x>/<int:y>.png")
        def tile(z: int, x: int, y: int) -> Response:
            if not valid_tile(z, x, y):
                abort(404)
            response = Response(basemap.tile_png(z, x, y), mimetype="image/png")
            response.headers["Cache-Control"] = "public, max-age=86400"
            return response

        app.register_blueprint(tiles)

    return mutate
