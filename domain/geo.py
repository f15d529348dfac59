"""Distances, delivery ranges and zones.

Zones are h3 cells: a pure function of a coordinate, so every process agrees on
which rider zone owns a point without asking anybody.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h3

from domain.errors import invalid

EARTH_RADIUS_M = 6_371_008.8
# Web Mercator's limit, and so Redis's GEO indexes': points nearer the poles cannot be
# indexed (nor searched around), though they are valid coordinates.
INDEXED_LAT_LIMIT = 85.05112878


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float

    def __post_init__(self) -> None:
        if not (-90.0 <= self.lat <= 90.0) or not (-180.0 <= self.lng <= 180.0):
            raise invalid("coordinates out of range", lat=self.lat, lng=self.lng)


def require_indexable(point: Point, what: str) -> None:
    """Refuse a point the platform's GEO indexes cannot hold, before anything is written."""
    if abs(point.lat) > INDEXED_LAT_LIMIT:
        raise invalid(
            f"{what} must lie within {INDEXED_LAT_LIMIT} degrees of the equator",
            lat=point.lat,
        )


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance (haversine), good to well under 1% at city scale."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi = phi2 - phi1
    dlmb = math.radians(b.lng - a.lng)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class RadiusRange:
    """Delivers to every point within `radius_m` of the merchant."""

    radius_m: int

    def __post_init__(self) -> None:
        if not 0 < self.radius_m <= 50_000:
            raise invalid("radius_m must be between 1 and 50000", radius_m=self.radius_m)

    def covers(self, merchant: Point, point: Point) -> bool:
        return distance_m(merchant, point) <= self.radius_m

    def reach_m(self, merchant: Point) -> float:
        return float(self.radius_m)

    def as_dict(self) -> dict[str, object]:
        return {"radius_m": self.radius_m}


@dataclass(frozen=True)
class PolygonRange:
    """Delivers inside a drawn area (lat, lng vertices; the ring closes itself)."""

    vertices: tuple[Point, ...]

    def __post_init__(self) -> None:
        if len(self.vertices) < 3:
            raise invalid("a delivery polygon needs at least 3 vertices")

    def covers(self, merchant: Point, point: Point) -> bool:
        # Ray casting on the plane: fine for city-sized polygons away from the poles
        # and the antimeridian.
        inside = False
        vs = self.vertices
        j = len(vs) - 1
        for i in range(len(vs)):
            yi, xi = vs[i].lat, vs[i].lng
            yj, xj = vs[j].lat, vs[j].lng
            if (yi > point.lat) != (yj > point.lat):
                x_cross = (xj - xi) * (point.lat - yi) / (yj - yi) + xi
                if point.lng < x_cross:
                    inside = not inside
            j = i
        return inside

    def reach_m(self, merchant: Point) -> float:
        return max(distance_m(merchant, v) for v in self.vertices)

    def as_dict(self) -> dict[str, object]:
        return {"polygon": [[v.lat, v.lng] for v in self.vertices]}


DeliveryRange = RadiusRange | PolygonRange


def delivery_range_from(spec: dict[str, object]) -> DeliveryRange:
    """Build a range from its wire form: `{"radius_m": n}` or `{"polygon": [[lat, lng], ...]}`."""
    if "radius_m" in spec and spec["radius_m"] is not None:
        radius = spec["radius_m"]
        if not isinstance(radius, int | float):
            raise invalid("radius_m must be a number")
        return RadiusRange(int(radius))
    polygon = spec.get("polygon")
    if isinstance(polygon, list | tuple):
        points = []
        for vertex in polygon:
            if not isinstance(vertex, list | tuple) or len(vertex) != 2:
                raise invalid("polygon vertices are [lat, lng] pairs")
            points.append(Point(float(vertex[0]), float(vertex[1])))
        return PolygonRange(tuple(points))
    raise invalid("delivery needs radius_m or polygon")


def zone_of(point: Point, resolution: int) -> str:
    return str(h3.latlng_to_cell(point.lat, point.lng, resolution))


def zones_around(zone: str, rings: int) -> list[str]:
    """The zone itself first, then its neighbours out to `rings` rings."""
    disk = [str(z) for z in h3.grid_disk(zone, rings)]
    disk.sort(key=lambda z: (h3.grid_distance(zone, z), z))
    return disk


def zones_at(zone: str, ring: int) -> list[str]:
    """The zones exactly `ring` steps away (ring 0 is the zone itself)."""
    return sorted(str(z) for z in h3.grid_ring(zone, ring)) if ring else [zone]
