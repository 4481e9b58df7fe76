"""Drawings as artists bring them: phone photos (EXIF orientation, dim paper,
vignetting), office scans (grey paper in a white margin, 1-px lines at 4000 px)
and storyboard panels cropped on their border. Each kind has the given case and
a generated set.

A prepared drawing is compared with the clean, upright, white-background
drawing the photo shows, both prepared at 128² or 256²: ink (gray < 128) recall
and precision must both be >= 0.9, allowing a 1-px tolerance (3×3 dilation of
the other image) after the best shift within ±2 px.
"""

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import binary_dilation

from flipsketch.errors import InputError
from flipsketch.sketch import clean_drawing, prepare_image

INPUTS = Path("/work/shared/cases/inputs")
ORIENTATION_UNDO = {  # EXIF orientation -> the transpose that stores an upright image that way
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def ink_scores(prepared: Image.Image, truth: Image.Image, shift: int = 2) -> tuple[float, float]:
    """(recall, precision) of the prepared drawing's ink against the truth's,
    1-px tolerance, best shift within ±shift pixels."""
    pred, true = np.asarray(prepared) < 128, np.asarray(truth) < 128
    square = np.ones((3, 3), bool)
    near_true = binary_dilation(true, square)
    best = (0.0, 0.0)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            moved = np.roll(pred, (dy, dx), axis=(0, 1))
            recall = (true & binary_dilation(moved, square)).sum() / max(true.sum(), 1)
            precision = (moved & near_true).sum() / max(moved.sum(), 1)
            best = max(best, (float(recall), float(precision)), key=min)
    return best


def assert_matches(prepared: Image.Image, truth: Image.Image) -> None:
    recall, precision = ink_scores(prepared, truth)
    assert recall >= 0.9 and precision >= 0.9, f"recall {recall:.3f}, precision {precision:.3f}"


def line_art(width: int, height: int, line: int) -> Image.Image:
    """Black line art on white: a circle, an arrow, a wave; `line` px wide."""
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    u = min(width, height)
    draw.ellipse([0.1 * u, 0.1 * u, 0.3 * u, 0.3 * u], outline=0, width=line)
    cx = width // 2
    draw.line([(cx, 0.2 * height), (cx, 0.85 * height)], fill=0, width=line)
    draw.line([(cx - 0.15 * u, 0.4 * height), (cx, 0.2 * height), (cx + 0.15 * u, 0.4 * height)], fill=0, width=line)
    xs = np.linspace(0.55 * width, 0.9 * width, 60)
    ys = 0.7 * height + 0.08 * u * np.sin(np.linspace(0, 3 * np.pi, 60))
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=0, width=line, joint="curve")
    return image


def photograph(clean: Image.Image, paper: int, seed: int = 0) -> Image.Image:
    """A photo of `clean` on paper of gray `paper` (centre), corners 35 % darker
    (vignetting), ink at 30 % of the paper, slightly blurred, noise σ = 3."""
    rng = np.random.default_rng(seed)
    h, w = clean.height, clean.width
    y, x = np.mgrid[0:h, 0:w]
    radius2 = ((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2
    light = paper * (1 - 0.35 * radius2 / 2)
    shade = 0.3 + 0.7 * np.asarray(clean.filter(ImageFilter.GaussianBlur(0.7)), np.float64) / 255
    data = light * shade + rng.normal(0, 3, (h, w))
    return Image.fromarray(np.clip(data, 0, 255).astype(np.uint8), "L")


def save_jpeg(image: Image.Image, path: Path, orientation: int = 1) -> Path:
    """Store `image` as a phone does: pixels as the sensor saw them plus a tag."""
    exif = Image.Exif()
    if orientation != 1:
        image = image.transpose(ORIENTATION_UNDO[orientation])
        exif[0x0112] = orientation
    image.save(path, quality=92, exif=exif)
    return path


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


# --- the given cases ----------------------------------------------------------


def test_phone_photo_is_turned_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    with Image.open(INPUTS / "phone_photo_exif6.jpg") as raw:
        upright = raw.convert("L").transpose(Image.Transpose.ROTATE_270)  # orientation 6 undone
    prepared = prepare_image(INPUTS / "phone_photo_exif6.jpg", 128, 128)
    assert_matches(prepared, prepare_image(save_png(upright, tmp_path / "upright.png"), 128, 128))
    ink = np.argwhere(np.asarray(prepared) < 128)
    circle = ink[ink[:, 0] < 27]  # the small circle is at the top left, above the arrow
    assert len(circle) and circle[:, 1].max() < 50
    assert np.ptp(ink[:, 0]) > np.ptp(ink[:, 1])  # the arrow stands upright: taller than wide


def test_panel_border_on_the_edge_is_cut_off_not_inverted(tmp_path: Path) -> None:
    prepared = prepare_image(INPUTS / "panel_frame_on_edge.png", 256, 256)
    data = np.asarray(prepared)
    assert data[128, 10] == 255 and data[0, 0] == 255  # white paper, not inverted
    with Image.open(INPUTS / "panel_frame_on_edge.png") as panel:
        inside = panel.convert("L").crop((5, 5, panel.width - 5, panel.height - 5))
    assert_matches(prepared, prepare_image(save_png(inside, tmp_path / "inside.png"), 256, 256))


def test_thin_lines_of_a_large_scan_survive_reduction(tmp_path: Path) -> None:
    prepared = prepare_image(INPUTS / "thin_lines_2400.png", 256, 256)
    with Image.open(INPUTS / "thin_lines_2400.png") as scan:
        bold = Image.fromarray(np.asarray(scan.convert("L").filter(ImageFilter.MinFilter(9))), "L")
    assert np.asarray(prepared).min() < 60
    assert_matches(prepared, prepare_image(save_png(bold, tmp_path / "bold.png"), 256, 256))


# --- generated sets, one per kind ---------------------------------------------


@cache
def _art(width: int, height: int, line: int) -> Image.Image:
    return line_art(width, height, line)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_kind_exif_orientation(tmp_path: Path, orientation: int) -> None:
    clean = _art(900, 1200, 4)
    photo = save_jpeg(photograph(clean, 170, seed=orientation), tmp_path / "photo.jpg", orientation)
    assert_matches(prepare_image(photo, 128, 128), prepare_image(save_png(clean, tmp_path / "clean.png"), 128, 128))


@pytest.mark.parametrize("paper", [90, 110, 125, 150, 180, 205, 230])
def test_kind_paper_tone_with_vignetting(tmp_path: Path, paper: int) -> None:
    clean = _art(1200, 900, 3)
    photo = save_jpeg(photograph(clean, paper, seed=paper), tmp_path / "photo.jpg")
    prepared = prepare_image(photo, 256, 256)
    assert np.asarray(prepared)[:20].min() == 255  # the paper is white, even in the dark corners
    assert_matches(prepared, prepare_image(save_png(clean, tmp_path / "clean.png"), 256, 256))


@pytest.mark.parametrize("paper", [160, 205, 230])
def test_kind_scan_of_grey_paper_in_a_white_margin(tmp_path: Path, paper: int) -> None:
    clean = _art(1000, 1400, 3)
    scan = np.full((1500, 1100), 255, np.uint8)
    scan[50:1450, 50:1050] = np.asarray(clean, np.float64) / 255 * (paper - 25) + 25
    prepared = prepare_image(save_png(Image.fromarray(scan, "L"), tmp_path / "scan.png"), 256, 256)
    padded = np.full((1500, 1100), 255, np.uint8)
    padded[50:1450, 50:1050] = np.asarray(clean)
    assert_matches(prepared, prepare_image(save_png(Image.fromarray(padded, "L"), tmp_path / "clean.png"), 256, 256))


@pytest.mark.parametrize("paper", [90, 160, 230])
def test_kind_photo_without_lines_is_reported(tmp_path: Path, paper: int) -> None:
    blank = Image.new("L", (1200, 900), 255)
    photo = save_jpeg(photograph(blank, paper, seed=paper), tmp_path / "photo.jpg")
    with pytest.raises(InputError, match="no lines were found"):
        prepare_image(photo)


FRAMED_EDGES = ["t", "l", "b", "r", "tb", "lr", "tl", "tlr", "tlbr"]


@pytest.mark.parametrize("edges", FRAMED_EDGES)
@pytest.mark.parametrize("thickness", [1, 3, 6])
def test_kind_panel_border_on_edges(tmp_path: Path, edges: str, thickness: int) -> None:
    clean = _art(800, 450, 2)
    framed = clean.copy()
    draw = ImageDraw.Draw(framed)
    w, h, t = framed.width, framed.height, thickness
    boxes = {"t": (0, 0, w, t), "b": (0, h - t, w, h), "l": (0, 0, t, h), "r": (w - t, 0, w, h)}
    for edge in edges:
        draw.rectangle(boxes[edge], fill=0)  # x1/y1 inclusive: t + 1 px, cut with a 1-px tolerance
    cut = [t if e in edges else 0 for e in "tblr"]
    inside = clean.crop((cut[2], cut[0], w - cut[3], h - cut[1]))
    prepared = prepare_image(save_png(framed, tmp_path / "framed.png"), 256, 256)
    assert np.asarray(prepared)[0, 0] == 255
    assert_matches(prepared, prepare_image(save_png(inside, tmp_path / "inside.png"), 256, 256))


def test_kind_panel_border_on_photographed_grey_paper(tmp_path: Path) -> None:
    clean = _art(1200, 675, 3)
    framed = clean.copy()
    ImageDraw.Draw(framed).rectangle((0, 0, 1199, 674), outline=0, width=5)
    photo = save_jpeg(photograph(framed, 140), tmp_path / "photo.jpg")
    inside = clean.crop((5, 5, 1195, 670))
    assert_matches(prepare_image(photo, 256, 256), prepare_image(save_png(inside, tmp_path / "inside.png"), 256, 256))


def test_kind_white_on_black_is_judged_on_the_whole_image(tmp_path: Path) -> None:
    chalk = Image.fromarray(255 - np.asarray(_art(800, 600, 4)), "L")
    ImageDraw.Draw(chalk).rectangle((0, 0, 799, 599), outline=255, width=8)  # a light border: still chalk
    prepared = prepare_image(save_png(chalk, tmp_path / "chalk.png"), 128, 128)
    assert np.asarray(prepared)[64, 5] == 255
    assert_matches(prepared, prepare_image(save_png(_art(800, 600, 4), tmp_path / "clean.png"), 128, 128))


SCANS = [(1000, 1), (1000, 3), (2400, 1), (2400, 2), (4000, 1), (4000, 3)]


@pytest.mark.parametrize(("side", "line"), SCANS)
def test_kind_thin_lines_in_large_scans(tmp_path: Path, side: int, line: int) -> None:
    prepared = prepare_image(save_png(_art(side, side, line), tmp_path / "scan.png"), 256, 256)
    bold = _art(side, side, round(side / 256 * 1.5))  # lines about 1.5 px wide at 256²
    assert_matches(prepared, prepare_image(save_png(bold, tmp_path / "bold.png"), 256, 256))


def test_kind_a_mark_too_small_to_survive_is_reported(tmp_path: Path) -> None:
    strip = Image.new("L", (4000, 20), 255)
    ImageDraw.Draw(strip).line([(2000, 10), (2010, 10)], fill=0, width=1)
    with pytest.raises(InputError, match="do not survive the reduction to 256×256"):
        prepare_image(save_png(strip, tmp_path / "strip.png"), 256, 256)


def test_training_frames_may_be_blank_and_come_back_white() -> None:
    blank = photograph(Image.new("L", (300, 200), 255), 120)
    assert np.asarray(clean_drawing(blank, allow_blank=True)).min() == 255
