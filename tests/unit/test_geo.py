from __future__ import annotations

import math

import h3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.geo import (
    Point,
    PolygonRange,
    RadiusRange,
    delivery_range_from,
    distance_m,
    zone_of,
    zones_around,
)

TIANANMEN = Point(39.9087, 116.3975)
MERIDIAN_DEGREE_M = 111_200


def near(value: float, expected: float, rel: float) -> bool:
    return abs(value - expected) <= rel * expected


# ---------------------------------------------------------------- Point


@pytest.mark.parametrize(
    ("lat", "lng"),
    [(90.0001, 0), (-90.0001, 0), (0, 180.0001), (0, -180.0001), (91, 200), (math.nan, 0)],
)
def test_point_rejects_out_of_range_coordinates(lat: float, lng: float) -> None:
    with pytest.raises(DomainError) as err:
        Point(lat, lng)
    assert err.value.code == "invalid_request"
    assert set(err.value.details) == {"lat", "lng"}


@pytest.mark.parametrize(("lat", "lng"), [(90, 180), (-90, -180), (0, 0), (31.2304, 121.4737)])
def test_point_accepts_the_whole_range(lat: float, lng: float) -> None:
    assert Point(lat, lng) == Point(lat, lng)


# ---------------------------------------------------------------- distance


def test_a_point_is_zero_metres_from_itself() -> None:
    assert distance_m(TIANANMEN, TIANANMEN) == 0


def test_one_degree_of_latitude() -> None:
    assert near(distance_m(Point(0, 0), Point(1, 0)), MERIDIAN_DEGREE_M, 0.005)
    assert near(distance_m(Point(39.5, 116.4), Point(40.5, 116.4)), MERIDIAN_DEGREE_M, 0.005)


def test_one_degree_of_longitude_shrinks_with_latitude() -> None:
    assert near(distance_m(Point(0, 10), Point(0, 11)), MERIDIAN_DEGREE_M, 0.005)
    assert near(distance_m(Point(60, 10), Point(60, 11)), MERIDIAN_DEGREE_M / 2, 0.005)


def test_paris_to_london() -> None:
    assert near(distance_m(Point(48.8566, 2.3522), Point(51.5074, -0.1278)), 343_500, 0.005)


def test_half_way_round_the_earth() -> None:
    assert near(distance_m(Point(0, 0), Point(0, 180)), 20_015_000, 0.005)
    assert near(distance_m(Point(90, 0), Point(-90, 0)), 20_015_000, 0.005)


def test_city_scale_distance() -> None:
    # 0.01 degree of latitude is about 1112 m anywhere.
    assert near(distance_m(TIANANMEN, Point(39.9187, 116.3975)), 1112, 0.005)


_points = st.builds(
    Point,
    lat=st.floats(-89, 89, allow_nan=False),
    lng=st.floats(-179, 179, allow_nan=False),
)


@given(_points, _points)
def test_distance_is_symmetric_and_bounded(a: Point, b: Point) -> None:
    d = distance_m(a, b)
    assert 0 <= d <= 20_016_000
    assert math.isclose(d, distance_m(b, a), rel_tol=1e-9, abs_tol=1e-6)


# ---------------------------------------------------------------- ranges


def test_radius_range_covers_inside_and_not_outside() -> None:
    rng = RadiusRange(3000)
    assert rng.covers(TIANANMEN, TIANANMEN)
    assert rng.covers(TIANANMEN, Point(39.9287, 116.3975))  # ~2.2 km north
    assert not rng.covers(TIANANMEN, Point(39.9387, 116.3975))  # ~3.3 km north


def test_radius_range_edge() -> None:
    point = Point(39.9247, 116.4075)
    d = distance_m(TIANANMEN, point)
    assert d != int(d)
    assert RadiusRange(math.ceil(d)).covers(TIANANMEN, point)
    assert not RadiusRange(math.floor(d)).covers(TIANANMEN, point)


@pytest.mark.parametrize("radius", [0, -1, 50_001])
def test_radius_range_bounds(radius: int) -> None:
    with pytest.raises(DomainError) as err:
        RadiusRange(radius)
    assert err.value.code == "invalid_request"


def test_radius_range_extremes_are_allowed() -> None:
    assert RadiusRange(1).reach_m(TIANANMEN) == 1.0
    assert RadiusRange(50_000).as_dict() == {"radius_m": 50_000}


def square(centre: Point, half_deg: float) -> PolygonRange:
    lat, lng = centre.lat, centre.lng
    return PolygonRange(
        (
            Point(lat - half_deg, lng - half_deg),
            Point(lat - half_deg, lng + half_deg),
            Point(lat + half_deg, lng + half_deg),
            Point(lat + half_deg, lng - half_deg),
        )
    )


def test_polygon_range_covers_inside_and_not_outside() -> None:
    rng = square(TIANANMEN, 0.02)
    assert rng.covers(TIANANMEN, TIANANMEN)
    assert rng.covers(TIANANMEN, Point(39.9250, 116.4100))
    assert not rng.covers(TIANANMEN, Point(39.9400, 116.3975))
    assert not rng.covers(TIANANMEN, Point(39.9087, 116.3700))
    assert not rng.covers(TIANANMEN, Point(-39.9087, -116.3975))


def test_polygon_vertex_order_does_not_matter() -> None:
    rng = square(TIANANMEN, 0.02)
    reversed_rng = PolygonRange(tuple(reversed(rng.vertices)))
    for p in (TIANANMEN, Point(39.9250, 116.4100), Point(39.9400, 116.3975)):
        assert rng.covers(TIANANMEN, p) == reversed_rng.covers(TIANANMEN, p)


def test_concave_polygon() -> None:
    # A U open to the north: two arms with a notch between them.
    #   (2,0)+--+(2,1)  (2,2)+--+(2,3)
    #        |  |            |  |
    #        |  +------------+  |
    #        |  (1,1)    (1,2)  |
    #   (0,0)+------------------+(0,3)
    base = Point(31.0, 121.0)
    scale = 0.01

    def at(y: float, x: float) -> Point:
        return Point(base.lat + y * scale, base.lng + x * scale)

    u_shape = PolygonRange(
        (at(0, 0), at(0, 3), at(2, 3), at(2, 2), at(1, 2), at(1, 1), at(2, 1), at(2, 0))
    )
    assert u_shape.covers(base, at(0.5, 1.5))  # the bottom bar
    assert u_shape.covers(base, at(1.5, 0.5))  # the left arm
    assert u_shape.covers(base, at(1.5, 2.5))  # the right arm
    assert not u_shape.covers(base, at(1.5, 1.5))  # the notch
    assert not u_shape.covers(base, at(2.5, 1.5))  # above the notch
    assert not u_shape.covers(base, at(0.5, 3.5))  # beside the shape


def test_polygon_reach_is_the_farthest_vertex() -> None:
    rng = square(TIANANMEN, 0.01)
    assert rng.reach_m(TIANANMEN) == max(distance_m(TIANANMEN, v) for v in rng.vertices)


def test_polygon_needs_three_vertices() -> None:
    with pytest.raises(DomainError) as err:
        PolygonRange((Point(0, 0), Point(0, 1)))
    assert err.value.code == "invalid_request"


# ---------------------------------------------------------------- wire forms


def test_range_from_radius() -> None:
    assert delivery_range_from({"radius_m": 3000}) == RadiusRange(3000)


def test_range_from_fractional_radius_truncates() -> None:
    assert delivery_range_from({"radius_m": 2500.7}) == RadiusRange(2500)


def test_range_from_polygon() -> None:
    rng = delivery_range_from({"polygon": [[39.90, 116.39], [39.90, 116.41], (39.92, 116.40)]})
    assert rng == PolygonRange((Point(39.90, 116.39), Point(39.90, 116.41), Point(39.92, 116.40)))


def test_range_from_polygon_when_radius_is_null() -> None:
    rng = delivery_range_from({"radius_m": None, "polygon": [[0, 0], [0, 1], [1, 1]]})
    assert isinstance(rng, PolygonRange)


@pytest.mark.parametrize(
    "rng", [RadiusRange(4200), square(TIANANMEN, 0.03)], ids=["radius", "polygon"]
)
def test_range_round_trips_through_its_wire_form(rng: RadiusRange | PolygonRange) -> None:
    assert delivery_range_from(rng.as_dict()) == rng


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"radius_m": None},
        {"radius_m": "3000"},
        {"radius_m": 0},
        {"radius_m": 0.5},
        {"radius_m": 60_000},
        {"polygon": "39.9,116.4"},
        {"polygon": None},
        {"polygon": [[0, 0], [0, 1]]},
        {"polygon": [[0, 0], [0, 1], [1, 1, 1]]},
        {"polygon": [[0, 0], [0, 1], "1,1"]},
        {"polygon": [[0, 0], [0, 1], [91, 1]]},
        {"circle": 3000},
    ],
    ids=repr,
)
def test_bad_range_specs_are_invalid(spec: dict[str, object]) -> None:
    with pytest.raises(DomainError) as err:
        delivery_range_from(spec)
    assert err.value.code == "invalid_request"


# ---------------------------------------------------------------- zones


@pytest.mark.parametrize("resolution", [0, 5, 7, 9, 15])
def test_zone_of_is_a_cell_of_the_resolution(resolution: int) -> None:
    zone = zone_of(TIANANMEN, resolution)
    assert isinstance(zone, str)
    assert h3.is_valid_cell(zone)
    assert h3.get_resolution(zone) == resolution


def test_zone_of_is_a_pure_function_of_the_point() -> None:
    assert zone_of(TIANANMEN, 7) == zone_of(Point(39.9087, 116.3975), 7)
    assert zone_of(TIANANMEN, 7) != zone_of(Point(31.2304, 121.4737), 7)


def test_zone_contains_its_point() -> None:
    zone = zone_of(TIANANMEN, 9)
    lat, lng = h3.cell_to_latlng(zone)
    # A resolution-9 cell is about 0.2 km across.
    assert distance_m(TIANANMEN, Point(lat, lng)) < 250


def test_zones_around_one_ring() -> None:
    zone = zone_of(TIANANMEN, 7)
    ring = zones_around(zone, 1)
    assert ring[0] == zone
    assert len(ring) == len(set(ring)) == 7
    assert all(h3.grid_distance(zone, z) == 1 for z in ring[1:])


def test_zones_around_two_rings_nearest_first() -> None:
    zone = zone_of(TIANANMEN, 7)
    disk = zones_around(zone, 2)
    assert disk[0] == zone
    assert len(set(disk)) == 19
    rings = [h3.grid_distance(zone, z) for z in disk]
    assert rings == sorted(rings)
    assert zones_around(zone, 1) == disk[:7]


def test_zones_around_zero_rings_is_the_zone() -> None:
    zone = zone_of(TIANANMEN, 7)
    assert zones_around(zone, 0) == [zone]


def test_rings_of_zones_add_up_to_the_disk() -> None:
    from domain.geo import zone_of, zones_around, zones_at

    zone = zone_of(Point(30.259, 120.149), 7)
    assert zones_at(zone, 0) == [zone]
    assert len(zones_at(zone, 1)) == 6
    union = [z for ring in range(3) for z in zones_at(zone, ring)]
    assert sorted(union) == sorted(zones_around(zone, 2))
    assert len(union) == len(set(union))
