"""Input sketches: every kind of file a user brings, and stroke polylines."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flipsketch.errors import InputError
from flipsketch.sketch import prepare_image, rasterize_strokes, read_sketch


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
    ],
)
def test_bad_strokes_get_specific_errors(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        rasterize_strokes(data, 64, 64)


def test_stroke_json_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "drawing.json"
    path.write_text(json.dumps(strokes({"points": [[0.2, 0.2], [0.8, 0.8]]})))
    assert np.asarray(read_sketch(path, 64, 64))[32, 32] < 100
    path.write_text("{broken")
    with pytest.raises(InputError, match="is not valid JSON"):
        read_sketch(path)
