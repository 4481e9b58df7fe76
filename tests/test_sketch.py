"""Input sketches: every kind of file a user brings, and stroke polylines."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flipsketch.errors import InputError
from flipsketch.sketch import MAX_MASK_LAYERS, MAX_STROKE_POINTS, prepare_image, rasterize_strokes, read_sketch
from flipsketch.validation import FieldError


def _drawing(size=(200, 120), mode="L", ink=0, paper=255) -> Image.Image:
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).line([(20, 20), (180, 100)], fill=ink, width=6)
    return image


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_line_drawing_is_fitted_with_margin_and_aspect_kept(tmp_path: Path) -> None:
    out = prepare_image(_save(_drawing(), tmp_path / "wide.png"), 256, 256)
    data = np.asarray(out)
    assert out.size == (256, 256) and out.mode == "L"
    rows = np.where((data < 128).any(axis=1))[0]
    cols = np.where((data < 128).any(axis=0))[0]
    assert cols.min() > 10 and cols.max() < 246  # margin on the long side
    assert 1.6 < (cols.ptp() + 1) / (rows.ptp() + 1) < 2.4  # the line's 160:80 extent, not squashed
    assert (data[:60] == 255).all()  # the 200x120 image sits centred in white bands


def test_white_on_black_is_inverted(tmp_path: Path) -> None:
    out = prepare_image(_save(_drawing(ink=255, paper=0), tmp_path / "chalk.png"), 64, 64)
    data = np.asarray(out)
    assert data[0, 0] == 255 and (data < 100).any()


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # transparent black paper
    ImageDraw.Draw(image).ellipse((20, 20, 80, 80), outline=(0, 0, 0, 255), width=4)
    data = np.asarray(prepare_image(_save(image, tmp_path / "alpha.png"), 64, 64))
    assert data[0, 0] == 255 and data[32, 32] == 255 and (data < 100).any()


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    data = np.full((80, 80), 65535, dtype=np.uint16)
    data[38:42, 10:70] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)  # mode I;16
    out = np.asarray(prepare_image(path, 64, 64))
    assert out[0, 0] == 255 and out[32, 32] < 60


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _save(Image.new("L", (64, 64), 255), p / "blank.png"), "blank"),
        (lambda p: _save(Image.new("L", (1, 1), 0), p / "dot.png"), "1×1"),
        (lambda p: (p / "notes.png").write_text("not an image") and p / "notes.png", "not an image"),
        (lambda p: p / "missing.png", "does not exist"),
    ],
)
def test_bad_files_get_specific_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prepare_image(make(tmp_path))


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    _drawing().save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match="truncated"):
        prepare_image(path)


def test_huge_png_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _save(Image.new("1", (9000, 9000), 1), tmp_path / "huge.png")
    with pytest.raises(InputError, match="too many to decode"):
        prepare_image(path)


def test_huge_jpeg_is_decoded_downscaled(tmp_path: Path) -> None:
    image = Image.new("L", (8000, 7000), 255)
    ImageDraw.Draw(image).line([(0, 0), (8000, 7000)], fill=0, width=400)
    path = _save(image, tmp_path / "huge.jpg", quality=50)
    out = np.asarray(prepare_image(path, 64, 64))
    assert out[0, 0] == 255 and out[32, 32] < 100


def strokes(*items: dict) -> dict:
    return {"schema": "flipsketch.strokes", "version": 1, "strokes": list(items)}


def test_strokes_are_antialiased_and_keep_their_width() -> None:
    thin = np.asarray(rasterize_strokes(strokes({"points": [[0.1, 0.5], [0.9, 0.5]], "radius": 0.004}), 256, 256))
    thick = np.asarray(rasterize_strokes(strokes({"points": [[0.1, 0.5], [0.9, 0.5]], "radius": 0.02}), 256, 256))
    assert ((thin > 0) & (thin < 255)).any()  # partial coverage: anti-aliased edges
    ink_thin, ink_thick = (255 - thin.astype(int)).sum(), (255 - thick.astype(int)).sum()
    assert 3.5 < ink_thick / ink_thin < 6.5  # 5x the radius, about 5x the ink
    assert thin[128, 128] < 80 and thin[20, 128] == 255  # on the line, y measured from the top


def test_stroke_opacity_and_per_point_radius() -> None:
    faint = np.asarray(
        rasterize_strokes(strokes({"points": [[0.1, 0.5], [0.9, 0.5]], "radius": 0.05, "opacity": 0.5}), 64, 64)
    )
    assert 100 < faint[32, 32] < 160
    tapered = strokes({"points": [[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]], "radius": [0.001, 0.03, 0.001]})
    data = np.asarray(rasterize_strokes(tapered, 128, 128))
    assert (data[:, 64] < 128).sum() > (data[:, 14] < 128).sum()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"strokes": []}, "schema"),
        ({**strokes(), "version": 99}, "version 99"),
        (strokes({"points": [[0.1]]}), "Stroke 0"),
        (strokes({"points": [[0, 0], [1, 1]]}, {"points": [[0, 0], [float("nan"), 1]]}), "Stroke 1.*finite"),
        (strokes({"points": [[0, 0], [1, 1]], "opacity": 2}), "opacity"),
        (strokes(), "blank"),
        (strokes({"points": [[0, 0], [1, 1]], "end_cap": "square"}), "'end_cap' is 'square', not 'round' or 'flat'"),
        (strokes({"points": [[0, 0], [150, 1]]}), "within -100..101"),
        ({**strokes({"points": [[0, 0], [1, 1]]}), "frame": [0, 0.5, 1, 0.2]}, "'frame' is"),
        ({**strokes({"points": [[0, 0], [1, 1]]}), "frame": [0, 0, 1, True]}, "'frame' is"),
    ],
)
def test_bad_strokes_get_specific_errors(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        rasterize_strokes(data, 64, 64)


def test_flat_caps_end_a_line_at_its_end_points_and_round_ones_reach_a_radius_past_them() -> None:
    line = {"points": [[0.25, 0.5], [0.75, 0.5]], "radius": 0.05}  # caps of 3.2 px at 64 px
    round_ink = np.flatnonzero(np.asarray(rasterize_strokes(strokes(line), 64, 64))[32] < 128)
    flat = {**line, "start_cap": "flat", "end_cap": "flat"}
    flat_ink = np.flatnonzero(np.asarray(rasterize_strokes(strokes(flat), 64, 64))[32] < 128)
    assert (round_ink.min(), round_ink.max()) == (13, 50)  # 16 - 3.2 .. 48 + 3.2
    assert (flat_ink.min(), flat_ink.max()) == (16, 47)  # columns 16..47: x 0.25..0.75
    closed = {**flat, "points": [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75]], "cyclic": True}
    assert np.array_equal(  # a closed stroke has no ends: its caps do not matter
        np.asarray(rasterize_strokes(strokes(closed), 64, 64)),
        np.asarray(rasterize_strokes(strokes({**closed, "start_cap": "round", "end_cap": "round"}), 64, 64)),
    )


def test_only_the_frame_shows_and_points_may_reach_far_past_it() -> None:
    far = {"points": [[0.5, 0.5], [60.0, 0.5]], "radius": 0.3}  # a wide line from the centre far to the right
    letterboxed = {**strokes(far), "frame": [0.0, 0.25, 1.0, 0.75]}
    image = np.asarray(rasterize_strokes(letterboxed, 64, 64))
    assert (image[:16] == 255).all() and (image[48:] == 255).all()  # the band around the frame is paper
    assert (image[16:48, 40:] == 0).all()  # the line, up to the frame's edges
    assert np.array_equal(np.asarray(rasterize_strokes(strokes(far), 64, 64))[16:48], image[16:48])


def _square(x0: float, y0: float, x1: float, y1: float, **fields) -> dict:
    return {"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "cyclic": True, **fields}


def _gray_of(data: dict, at: tuple[int, int] = (32, 32)) -> int:
    return int(np.asarray(rasterize_strokes(data, 64, 64))[at])


def _gray(*items: dict, at: tuple[int, int] = (32, 32)) -> int:
    return _gray_of(strokes(*items), at)


ACROSS = {"points": [[0.1, 0.5], [0.9, 0.5]], "radius": 0.05}  # a black line through the middle


def test_strokes_are_painted_in_order_fill_then_line_and_a_later_fill_hides_what_is_under_it() -> None:
    white_card = _square(0.25, 0.25, 0.75, 0.75, opacity=0.0, fill=1.0, fill_color=1.0)
    assert _gray(ACROSS) == 0
    assert _gray(ACROSS, white_card) == 255  # the card, drawn later, hides the line
    assert _gray(ACROSS, white_card, at=(32, 10)) == 0  # outside the card the line shows
    assert _gray(white_card, ACROSS) == 0  # drawn before: the line is on top
    gray_card = {**white_card, "fill_color": 0.5, "opacity": 1.0, "radius": 0.03}
    assert _gray(gray_card) == 127 and _gray(gray_card, at=(16, 32)) == 0  # its fill, then its own line
    assert _gray({**ACROSS, "color": 0.5}) == 127  # a gray line
    assert _gray(gray_card, {**ACROSS, "color": 1.0}) == 255  # paper over a fill: a holdout material


def test_overlapping_translucent_strokes_compose_like_blender() -> None:
    """Blender blends each stroke over what is under it: two half-opaque
    black lines leave a quarter of the paper (gray 63), not half of it."""
    half = {**ACROSS, "opacity": 0.5}
    assert _gray(half) == 127 and _gray(half, half) == 63


def test_strokes_sharing_a_fill_id_fill_one_region_with_holes() -> None:
    outer = _square(0.1, 0.1, 0.9, 0.9, opacity=0.0, fill=1.0, fill_id=7)
    inner = _square(0.3, 0.3, 0.7, 0.7, opacity=0.0, fill=0.2, fill_id=7)  # its own fill does not count
    assert _gray(outer, inner, at=(32, 32)) == 255 and _gray(outer, inner, at=(12, 32)) == 0  # a hole, a rim
    assert _gray(outer, {**inner, "fill_id": 0, "fill": 1.0}) == 0  # apart: the inner square fills too
    assert _gray(outer, {**inner, "fill_id": 8}, at=(12, 32)) == 0  # another group: the rim is filled
    third = _square(0.4, 0.4, 0.6, 0.6, opacity=0.0, fill_id=7)
    assert _gray(outer, inner, third) == 0  # even-odd: an island inside the hole is filled


def test_a_mask_with_a_hole_reveals_its_rim_only() -> None:
    data = strokes({**EVERYWHERE, "mask": 0})
    rim = [
        _square(0.1, 0.1, 0.9, 0.9, opacity=0.0, fill=1.0, fill_id=1),
        _square(0.3, 0.3, 0.7, 0.7, opacity=0.0, fill_id=1),
    ]
    data["mask_layers"], data["masks"] = [{"strokes": rim}], [[{"layer": 0, "invert": False}]]
    image = np.asarray(rasterize_strokes(data, 64, 64))
    assert image[32, 32] == 255 and image[12, 32] == 0 and image[2, 2] == 255  # hole, rim, outside


GRAY_CARD = _square(0.25, 0.25, 0.75, 0.75, opacity=0.0, fill=1.0, fill_color=0.5)
# name: (the gray card's layer blend mode, the gray on the black line, on the paper); line under the card
BLENDS = {
    "REGULAR": (127, 127),  # over: the card hides the line
    "MULTIPLY": (0, 127),  # 0 x 0.5, 1 x 0.5
    "ADD": (127, 255),  # 0 + 0.5, 1 + 0.5 clamped
    "SUBTRACT": (0, 127),  # 0 - 0.5 clamped, 1 - 0.5
    "DIVIDE": (0, 255),  # 0 / 0.5, 1 / 0.5 clamped
    "HARDLIGHT": (0, 255),  # source 0.5: 2 x 0.5 x g
}


@pytest.mark.parametrize("blend", BLENDS)
def test_layer_blend_modes_blend_a_layer_as_blender_does(blend: str) -> None:
    data = {**strokes(ACROSS, {**GRAY_CARD, "layer": 0}), "layers": [{"blend": blend}]}
    image = np.asarray(rasterize_strokes(data, 64, 64))
    assert (int(image[32, 32]), int(image[20, 32])) == BLENDS[blend]
    assert image[32, 10] == 0 and image[5, 5] == 255  # the line and the paper outside the card are untouched


def test_a_layer_is_painted_over_itself_before_it_is_blended() -> None:
    """Two overlapping half-opaque black strokes of one Multiply layer make
    one layer of alpha 0.75 (over each other), multiplied once; strokes of two
    layers, of the same mode, are blended one after the other."""
    half = {**ACROSS, "opacity": 0.5}
    one = {**strokes({**half, "layer": 0}, {**half, "layer": 0}), "layers": [{"blend": "MULTIPLY"}]}
    assert _gray_of(one) == 63  # 1 x (1 - 0.75)
    two = {**strokes({**half, "layer": 0}, {**half, "layer": 1}), "layers": [{"blend": "MULTIPLY"}] * 2}
    assert _gray_of(two) == 63  # 1 x 0.5 x 0.5
    dodge = {**strokes(ACROSS, {**half, "color": 1.0, "layer": 0}), "layers": [{"blend": "ADD"}]}
    assert _gray_of(dodge) == 63  # Blender adds the premultiplied white (0.5) x alpha (0.5) to the black line


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"layers": {}}, "layers", "must be a list"),
        ({"layers": [{"blend": "SCREEN"}]}, "layers[0].blend", "'SCREEN', not a Grease Pencil blend mode"),
        ({"layers": ["MULTIPLY"]}, "layers[0].blend", "is None"),
        ({"layer": 1}, "strokes[0].layer", "'layer' is 1, not the index of one of 1 layers"),
        ({"layer": True}, "strokes[0].layer", "'layer' is True"),
    ],
)
def test_bad_layers_get_errors_naming_the_field(change: dict, field: str, message: str) -> None:
    data = {**strokes({**ACROSS, "layer": change.pop("layer", 0)}), "layers": [{"blend": "MULTIPLY"}], **change}
    with pytest.raises(FieldError, match=message) as info:
        rasterize_strokes(data, 64, 64)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("stroke", "field", "message"),
    [
        ({**ACROSS, "color": 1.5}, "strokes[0].color", "0..1"),
        ({**ACROSS, "fill": [0.5]}, "strokes[0].fill", "one number"),
        ({**ACROSS, "fill_color": "white"}, "strokes[0].fill_color", "hold numbers"),
        ({**ACROSS, "fill_id": -1}, "strokes[0].fill_id", "is -1, not a whole number"),
        ({**ACROSS, "fill_id": 1.5}, "strokes[0].fill_id", "is 1.5"),
        ({**ACROSS, "fill_id": True}, "strokes[0].fill_id", "is True"),
    ],
)
def test_bad_colours_and_fills_get_errors_naming_the_field(stroke: dict, field: str, message: str) -> None:
    with pytest.raises(FieldError, match=message) as info:
        rasterize_strokes(strokes(stroke), 64, 64)
    assert info.value.field == field


EVERYWHERE = {"points": [[-0.5, 0.5], [1.5, 0.5]], "radius": 0.5}  # ink over the whole frame


def _rect(x0: float, y0: float, x1: float, y1: float, fill: float) -> dict:
    """A fill-only mask stroke: the rectangle, no line."""
    return {"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "opacity": 0.0, "fill": fill}


MASK_LAYERS = [
    {"strokes": [_rect(-1, -1, 0.5, 2, 0.5)]},  # 0: the left half, half covered
    {"strokes": [_rect(-1, -1, 2, 0.5, 0.5)]},  # 1: the top half, half covered
    {"strokes": [_rect(0.75, -1, 2, 2, 1.0)]},  # 2: the right quarter, fully
]
# pixel centres (row, column) of a 64 px drawing: top-left, top middle, bottom-left, bottom middle, top right quarter
REGIONS = {"TL": (8, 8), "TM": (8, 40), "BL": (40, 8), "BM": (40, 40), "RQ": (8, 56)}


def _masked(*entries: tuple[int, bool]) -> dict[str, int]:
    data = strokes({**EVERYWHERE, "mask": 0})
    data["mask_layers"] = MASK_LAYERS
    data["masks"] = [[{"layer": layer, "invert": invert} for layer, invert in entries]]
    image = np.asarray(rasterize_strokes(data, 64, 64))
    return {name: int(image[at]) for name, at in REGIONS.items()}


def test_masks_fold_like_blenders_engine() -> None:
    """Gray = 255 - ceil(255 x coverage); plain masks unite (1 - (1 - a)(1 - b)),
    inverted ones cut (x (1 - m)), in the order given."""
    half, three_quarters = 255 - 128, 255 - 192  # ceil(127.5), ceil(191.25)
    assert _masked((0, False)) == {"TL": half, "TM": 255, "BL": half, "BM": 255, "RQ": 255}
    union = {"TL": three_quarters, "TM": half, "BL": half, "BM": 255, "RQ": half}
    assert _masked((0, False), (1, False)) == union
    assert _masked((0, False), (1, False), (2, True)) == {**union, "RQ": 255}
    assert _masked((2, True)) == {"TL": 0, "TM": 0, "BL": 0, "BM": 0, "RQ": 255}  # inverted first: all but it
    assert _masked((2, True), (0, False)) == {"TL": 0, "TM": 0, "BL": 0, "BM": 0, "RQ": 255}
    assert _masked((0, False), (2, True)) == {"TL": half, "TM": 255, "BL": half, "BM": 255, "RQ": 255}


def test_a_masked_stroke_shows_only_inside_its_mask_and_others_are_untouched() -> None:
    ring = {"points": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7]], "radius": 0.05, "cyclic": True}
    line = {"points": [[0.1, 0.9], [0.9, 0.9]], "radius": 0.02}
    data = strokes({**EVERYWHERE, "mask": 0}, line)
    data["mask_layers"] = [{"strokes": [ring]}]  # a line (opacity 1, no fill) masks where it is drawn
    data["masks"] = [[{"layer": 0, "invert": False}]]
    masked = np.asarray(rasterize_strokes(data, 64, 64)) < 255
    alone = np.asarray(rasterize_strokes(strokes({**ring, "opacity": 1.0}, line), 64, 64)) < 255
    assert np.array_equal(masked, alone)  # the whole-frame stroke is cut to the ring exactly
    data["mask_layers"] = [{"strokes": [{**ring, "fill": 1.0}]}]  # filled: the inside shows too
    image = np.asarray(rasterize_strokes(data, 64, 64))
    assert image[32, 32] == 0 and image[4, 4] == 255 and image[57, 32] < 128  # inside, outside, the line


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"masks": {}}, "masks", "must be a list"),
        ({"masks": [[]]}, "masks[0]", "non-empty list"),
        ({"masks": [["x"]]}, "masks[0][0]", "must be an object"),
        ({"masks": [[{"layer": 3}]]}, "masks[0][0].layer", "is 3, not the index of one of 1 mask layers"),
        ({"masks": [[{"layer": True}]]}, "masks[0][0].layer", "is True"),
        ({"masks": [[{"layer": 0, "invert": 1}]]}, "masks[0][0].invert", "not true or false"),
        ({"mask_layers": [{}]}, "mask_layers[0]", "'strokes' list"),
        ({"mask_layers": [{"strokes": []}] * (MAX_MASK_LAYERS + 1)}, "mask_layers", f"at most {MAX_MASK_LAYERS}"),
        ({"mask_layers": [{"strokes": [_rect(0, 0, 1, 1, 2.0)]}]}, "mask_layers[0].strokes[0].fill", "0..1"),
        ({"mask_layers": [{"strokes": [_rect(0, 0, 1, 200, 1.0)]}]}, "mask_layers[0].strokes[0].points", "-100..101"),
        ({"mask_layers": [{"strokes": [{"points": "x"}]}]}, "mask_layers[0].strokes[0].points", "hold numbers"),
        ({"stroke_mask": 1}, "strokes[0].mask", "'mask' is 1, not the index of one of 1 masks"),
        ({"stroke_mask": False}, "strokes[0].mask", "'mask' is False"),
    ],
)
def test_bad_masks_get_errors_naming_the_field(change: dict, field: str, message: str) -> None:
    stroke = {**EVERYWHERE, "mask": change.pop("stroke_mask", 0)}
    data = {**strokes(stroke), "mask_layers": [{"strokes": [_rect(0, 0, 1, 1, 1.0)]}], "masks": [[{"layer": 0}]]}
    with pytest.raises(FieldError, match=message) as info:
        rasterize_strokes({**data, **change}, 64, 64)
    assert info.value.field == field


def test_mask_layers_count_once_per_run_of_masked_strokes_in_the_point_limit() -> None:
    corners = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]] + [[0.0, 1.0]] * (MAX_STROKE_POINTS // 2 - 2)
    heavy = {"strokes": [{"points": corners, "fill": 1.0}]}
    two = strokes({**EVERYWHERE, "mask": 0}, {**EVERYWHERE, "mask": 0})
    data = {**two, "mask_layers": [heavy], "masks": [[{"layer": 0}]]}
    rasterize_strokes(data, 16, 16)  # one run of strokes under the mask: its coverage is made once
    data["masks"] = [[{"layer": 0}], [{"layer": 0}]]
    rasterize_strokes(data, 16, 16)  # a mask no stroke uses costs nothing
    data["strokes"][1]["mask"] = 1  # two runs: the heavy layer is folded twice
    with pytest.raises(FieldError, match="over 250000 points") as info:
        rasterize_strokes(data, 16, 16)
    assert info.value.field == "masks[1]"


def test_stroke_json_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "drawing.json"
    path.write_text(json.dumps(strokes({"points": [[0.2, 0.2], [0.8, 0.8]]})))
    assert np.asarray(read_sketch(path, 64, 64))[32, 32] < 100
    path.write_text("{broken")
    with pytest.raises(InputError, match="is not valid JSON"):
        read_sketch(path)
