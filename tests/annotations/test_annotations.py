"""ASAP XML and GeoJSON round trips, malformed inputs, and rasterization semantics."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from wsipipe.annotations import (
    Annotation,
    iter_mask_tiles,
    rasterize,
    read_annotations,
    read_asap_xml,
    read_geojson,
    write_asap_xml,
    write_geojson,
)
from wsipipe.errors import AnnotationError

SQUARE_WITH_HOLE = shapely.Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(25, 25), (75, 25), (75, 75), (25, 75)]])

ASAP_TEMPLATE = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="{x0}" Y="10" />
        <Coordinate Order="2" X="50" Y="50" />
        <Coordinate Order="1" X="50" Y="10" />
        <Coordinate Order="3" X="10" Y="50" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups><Group Name="{group}" PartOfGroup="None" Color="#FF0000"><Attributes /></Group></AnnotationGroups>
</ASAP_Annotations>
"""


def test_asap_groups_map_to_camelyon_labels(tmp_path: Path) -> None:
    for group, label in [("_0", "tumor"), ("_1", "tumor"), ("Tumor", "tumor"), ("_2", "exclusion"), ("R3", "R3")]:
        path = tmp_path / f"{group}.xml"
        path.write_text(ASAP_TEMPLATE.format(group=group, x0="10"))
        (ann,) = read_asap_xml(path)
        assert ann.label == label
        assert ann.properties["group"] == group
        # Coordinates are sorted by Order, so the ring is the 40x40 square, not a bow tie.
        assert ann.geometry.is_valid
        assert ann.geometry.area == pytest.approx(1600.0)


def test_asap_comma_decimal_coordinates_are_read(tmp_path: Path) -> None:
    path = tmp_path / "comma.xml"
    path.write_text(ASAP_TEMPLATE.format(group="_0", x0="10,5"))
    (ann,) = read_asap_xml(path)
    assert ann.geometry.exterior.coords[0][0] == pytest.approx(10.5)


@pytest.mark.parametrize("bad", ["abc", "", "nan", "1e999"])
def test_asap_broken_coordinate_names_file_and_annotation(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "broken.xml"
    path.write_text(ASAP_TEMPLATE.format(group="_0", x0=bad))
    with pytest.raises(AnnotationError) as info:
        read_asap_xml(path)
    message = str(info.value)
    assert str(path) in message
    assert "Annotation 0" in message
    assert "coordinate 0 X" in message


def test_asap_missing_coordinate_attribute(tmp_path: Path) -> None:
    path = tmp_path / "noy.xml"
    path.write_text(ASAP_TEMPLATE.format(group="_0", x0="10").replace('Y="50" />', "/>", 1))
    with pytest.raises(AnnotationError, match="needs X and Y"):
        read_asap_xml(path)


def test_asap_not_xml_and_wrong_root(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(AnnotationError, match="not well-formed XML"):
        read_asap_xml(bad)
    other = tmp_path / "other.xml"
    other.write_text("<svg></svg>")
    with pytest.raises(AnnotationError, match="expected <ASAP_Annotations>"):
        read_asap_xml(other)
    with pytest.raises(AnnotationError, match="not found"):
        read_asap_xml(tmp_path / "missing.xml")


def test_asap_self_intersecting_polygon_is_repaired_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "bowtie.xml"
    text = ASAP_TEMPLATE.format(group="_0", x0="10").replace('Order="2" X="50" Y="50"', 'Order="2" X="10" Y="50"')
    text = text.replace('Order="3" X="10" Y="50"', 'Order="3" X="50" Y="50"')
    path.write_text(text)
    (ann,) = read_asap_xml(path)
    assert ann.geometry.is_valid
    assert ann.geometry.area == pytest.approx(800.0)  # two triangles of the bow tie
    with pytest.raises(AnnotationError, match="invalid polygon"):
        read_asap_xml(path, repair=False)


def test_asap_round_trip_keeps_holes_as_exclusions(tmp_path: Path) -> None:
    anns = [
        Annotation(SQUARE_WITH_HOLE, "tumor", "lesion"),
        Annotation(shapely.Point(5, 7), "tumor", "dot", {"confidence": 0.75}),
    ]
    path = write_asap_xml(anns, tmp_path / "out.xml")
    back = read_asap_xml(path)
    assert [a.label for a in back] == ["tumor", "exclusion", "tumor"]
    assert back[0].geometry.equals(shapely.Polygon(SQUARE_WITH_HOLE.exterior))
    assert back[2].geometry.equals(shapely.Point(5, 7))
    # The raster of the re-read file equals the raster of the polygon with its hole.
    a = rasterize(anns, (20, 20), downsample=5)
    b = rasterize(back, (20, 20), downsample=5)
    np.testing.assert_array_equal(a, b)


def test_geojson_round_trip_with_gzip(tmp_path: Path) -> None:
    anns = [Annotation(SQUARE_WITH_HOLE, "tumor", "lesion", {"measurements": {"p": 0.5, "bad": float("nan")}})]
    for name in ("a.geojson", "a.geojson.gz"):
        path = write_geojson(anns, tmp_path / name)
        (back,) = read_geojson(path)
        assert back.label == "tumor"
        assert back.geometry.equals(SQUARE_WITH_HOLE)
        assert back.properties["measurements"] == {"p": 0.5}  # NaN is dropped: QuPath 0.4 rejects it
    with gzip.open(tmp_path / "a.geojson.gz", "rt") as fh:
        doc = json.load(fh)
    feature = doc["features"][0]
    assert feature["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert feature["properties"]["objectType"] == "annotation"


def test_geojson_invalid_polygon_is_a_clear_error(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    path = tmp_path / "bowtie.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": bowtie,
                        "properties": {"name": "roi", "classification": {"name": "Tumor", "color": [1, 2, 3]}},
                    }
                ],
            }
        )
    )
    with pytest.raises(AnnotationError) as info:
        read_geojson(path)
    assert str(path) in str(info.value)
    assert "feature 0 ('roi')" in str(info.value)
    assert "Self-intersection" in str(info.value)
    (fixed,) = read_geojson(path, repair=True)
    assert fixed.geometry.is_valid
    assert fixed.geometry.area == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "FeatureCollection"}', "no 'features' list"),
        ('{"type": "Feature", "properties": {}}', "has no geometry"),
        (
            '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}',
            "malformed Polygon",
        ),
        ('{"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": []}}', "GeometryCollection"),
        ("[1, 2]", "expected a GeoJSON"),
    ],
)
def test_geojson_malformed_inputs(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_geojson(path)


def test_read_annotations_dispatches_on_suffix(tmp_path: Path) -> None:
    anns = [Annotation(shapely.box(0, 0, 10, 10), "tumor")]
    assert read_annotations(write_asap_xml(anns, tmp_path / "a.xml"))[0].label == "tumor"
    assert read_annotations(write_geojson(anns, tmp_path / "a.json"))[0].label == "tumor"
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotations(tmp_path / "a.txt")


def test_rasterize_samples_top_left_or_centre() -> None:
    # A box covering level-0 x in [15, 45), y in [0, 10): at downsample 10, top-left samples
    # x = 0,10,20,30,40 -> 20, 30, 40 inside; centre samples 5,15,...,45 -> 15, 25, 35 inside (45 on the edge).
    box = [Annotation(shapely.box(15, 0, 45, 10), "tumor")]
    top = rasterize(box, (1, 6), downsample=10, sample="topleft")
    centre = rasterize(box, (1, 6), downsample=10, sample="center")
    assert top[0].tolist() == [False, False, True, True, True, False]
    assert centre[0, :4].tolist() == [False, True, True, True]


def test_rasterize_label_selection_and_subtraction() -> None:
    anns = [
        Annotation(shapely.box(0, 0, 75, 75), "tumor"),
        Annotation(shapely.box(15, 15, 35, 35), "exclusion"),
        Annotation(shapely.box(55, 55, 95, 95), "R1"),
    ]
    mask = rasterize(anns, (10, 10), downsample=10)
    assert mask.sum() == 64 - 4
    assert not mask[2:4, 2:4].any()
    every = rasterize(anns, (10, 10), downsample=10, labels=("*",), subtract=())
    assert every.sum() == 64 + 16 - 4  # union: the R1 box overlaps the tumour box on 2x2 pixels
    r1 = rasterize(anns, (10, 10), downsample=10, labels=("r1",), subtract=())
    assert r1.sum() == 16


def test_tiled_rasterization_equals_whole() -> None:
    rng = np.random.default_rng(0)
    anns = []
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 5000), rng.uniform(0, 4000), rng.uniform(50, 700)
        anns.append(Annotation(shapely.Point(cx, cy).buffer(r), "tumor"))
    anns.append(Annotation(shapely.Point(2500, 2000).buffer(200), "exclusion"))
    whole = rasterize(anns, (250, 313), downsample=16)
    tiled = np.zeros_like(whole)
    for r0, c0, tile in iter_mask_tiles(anns, (250, 313), downsample=16, tile=64):
        assert tile.shape[0] <= 64
        assert tile.shape[1] <= 64
        tiled[r0 : r0 + tile.shape[0], c0 : c0 + tile.shape[1]] = tile
    np.testing.assert_array_equal(whole, tiled)
    assert whole.sum() > 1000


def test_rasterize_for_slide_by_level_and_mpp(tmp_path: Path) -> None:
    from wsipipe.annotations import rasterize_for_slide
    from wsipipe.slide import open_slide
    from wsipipe.synth import make_test_slide

    info = make_test_slide(tmp_path / "s.tif", kind="tumor", seed=3)
    with open_slide(info.path) as slide:
        by_level, ds = rasterize_for_slide(info.annotations, slide, level=2)
        assert ds == pytest.approx(4.0)
        assert by_level.shape == (slide.level_dimensions[2][1], slide.level_dimensions[2][0])
        by_mpp, ds_mpp = rasterize_for_slide(info.annotations, slide, mpp=0.972)
        assert ds_mpp == pytest.approx(4.0)
        np.testing.assert_array_equal(by_level, by_mpp)
        # The mask's tumour area matches the polygons' area (level-0 px² / 16 per mask pixel).
        area = sum(a.geometry.area for a in info.annotations if a.label == "tumor")
        assert by_level.sum() == pytest.approx(area / 16, rel=0.05)
        with pytest.raises(ValueError, match="exactly one"):
            rasterize_for_slide(info.annotations, slide)
        with pytest.raises(ValueError, match="out of range"):
            rasterize_for_slide(info.annotations, slide, level=9)


def test_annotation_file_tries_the_one_suffix_list_in_order(tmp_path: Path) -> None:
    from wsipipe.annotations import ANNOTATION_SUFFIXES, annotation_file
    from wsipipe.slide import ANNOTATION_SUFFIXES as slide_suffixes

    assert ANNOTATION_SUFFIXES is slide_suffixes
    assert annotation_file(tmp_path, "Tumor_001") is None
    (tmp_path / "tumor_001.json").write_text("{}")
    assert annotation_file(tmp_path, "Tumor_001") == tmp_path / "tumor_001.json"
    (tmp_path / "Tumor_001.xml").write_text("<ASAP_Annotations/>")
    assert annotation_file(tmp_path, "Tumor_001") == tmp_path / "Tumor_001.xml"  # ASAP XML first
