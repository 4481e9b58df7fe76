"""Input sketches: image files and stroke polylines -> a clean line drawing.

The model was trained on black lines on white. Users bring scans, exports with
transparency, 16-bit PNGs, white-on-black chalk drawings, or (from Blender)
stroke polylines; all of them become an 8-bit grayscale drawing with white
background here, or a specific error that says what to do.

Stroke schema (version 1; what the Blender add-on sends)::

    {"schema": "flipsketch.strokes", "version": 1,
     "strokes": [{"points": [[x, y], ...], "radius": 0.004, "opacity": 1.0}, ...]}

x, y are in [0, 1] across the frame from edge to edge (the camera frame's u, v),
origin top-left, y down, so pixel column i spans [i/W, (i+1)/W]; radius is a
fraction of the frame width (a number, or one per point); opacity is 0..1.
Optional per stroke: "cyclic": true (a closed stroke, its last point joins the
first) and "id" (traced strokes: the same line keeps its id across a clip).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from flipsketch import SCHEMA_VERSION
from flipsketch.errors import InputError
from flipsketch.validation import FieldError, parse_json

MIN_SIDE = 16  # smaller images carry no drawing the model can use
MAX_DECODE_PIXELS = 50_000_000  # decoding more than this risks memory exhaustion
INK_LEVEL = 160  # gray values below this count as ink
MIN_INK_FRACTION = 1e-4
MARGIN = 0.04  # white border added around image files when fitted to the frame
SUPERSAMPLE = 4  # stroke rasterisation anti-aliasing factor
MAX_STROKE_POINTS = 250_000  # all strokes together: bounds the rasterising cost
MAX_RADIUS = 0.5  # of the frame width


def load_image(source: str | Path | bytes) -> Image.Image:
    """Decode an image file or bytes into grayscale 'L', alpha flattened on white."""
    name = "uploaded image" if isinstance(source, bytes) else f"'{source}'"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise InputError(f"Sketch file {name} does not exist.", "Check the path.") from None
    except UnidentifiedImageError:
        raise InputError(
            f"{name} is not an image file that can be read.", "Save the drawing as PNG or JPEG and try again."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name} is too large to decode safely.", "Scale the drawing down to at most 4096×4096 pixels."
        ) from None
    except OSError as exc:
        raise InputError(f"{name} cannot be read: {exc}.", "Check the file and its permissions.") from None
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise InputError(
            f"{name} is only {width}×{height} pixels.", f"Use a drawing of at least {MIN_SIDE}×{MIN_SIDE} pixels."
        )
    if width * height > MAX_DECODE_PIXELS:
        if image.format != "JPEG":
            raise InputError(
                f"{name} has {width}×{height} pixels, too many to decode safely.",
                "Scale the drawing down to at most 4096×4096 pixels.",
            )
        image.draft("L", (4096, 4096))  # JPEG decodes at a reduced scale directly
    try:
        image.load()
    except OSError as exc:
        raise InputError(
            f"{name} is truncated or damaged ({exc}).", "Export the drawing again; the file is incomplete."
        ) from None
    return to_gray_on_white(image)


def to_gray_on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        top = 65535.0 if data.max() > 255 else (1.0 if image.mode == "F" and data.max() <= 1 else 255.0)
        return Image.fromarray(np.clip(data / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return image.convert("L")


def normalise_drawing(gray: Image.Image, detect_inverted: bool = True, allow_blank: bool = False) -> Image.Image:
    """Make the background white: a drawing whose border is mostly dark is
    white-on-black (chalk, inverted scan) and gets inverted. Refuse blank ones
    (except frames of a training clip, where an empty frame is legitimate)."""
    data = np.asarray(gray)
    border = np.concatenate([data[0], data[-1], data[:, 0], data[:, -1]])
    if detect_inverted and np.median(border) < 128:
        data = 255 - data
    if not allow_blank and (data < INK_LEVEL).mean() < MIN_INK_FRACTION:
        raise InputError("The drawing is blank: no lines were found.", "Draw something before animating.")
    return Image.fromarray(np.ascontiguousarray(data), "L")


def fit_to_frame(gray: Image.Image, width: int, height: int) -> Image.Image:
    """Scale a drawing into width×height with a white margin, aspect kept."""
    box_w, box_h = round(width * (1 - 2 * MARGIN)), round(height * (1 - 2 * MARGIN))
    scale = min(box_w / gray.width, box_h / gray.height)
    size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    resized = gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def prepare_image(source: str | Path | bytes, width: int = 256, height: int = 256) -> Image.Image:
    """Image file -> drawing of the generation size, ready for the sampler."""
    return fit_to_frame(normalise_drawing(load_image(source)), width, height)


def prepare_reference(source: str | Path | bytes, width: int = 256, height: int = 256) -> Image.Image:
    """A previous clip's frame as the reference of an extension: used exactly as
    it is (no margin, no re-fitting), so chained extensions cannot drift."""
    gray = normalise_drawing(load_image(source), detect_inverted=False)
    return gray if gray.size == (width, height) else gray.resize((width, height), Image.Resampling.LANCZOS)


def _stroke_error(index: int, problem: str, name: str = "") -> FieldError:
    return FieldError(
        f"strokes[{index}]{'.' + name if name else ''}",
        f"Stroke {index}: {problem}.",
        "Send strokes in the flipsketch.strokes schema (see sketch.py).",
    )


def _numbers(index: int, name: str, value: Any, low: float, high: float) -> np.ndarray:
    """A stroke's numbers as float64, finite and within [low, high]."""
    if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
        raise _stroke_error(index, f"'{name}' must hold numbers", name)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _stroke_error(index, f"'{name}' must hold numbers", name) from None
    if not np.isfinite(array).all():
        raise _stroke_error(index, f"'{name}' has a value that is not a finite number", name)
    if array.size and (array.min() < low or array.max() > high):
        raise _stroke_error(index, f"'{name}' must stay within {low:g}..{high:g}", name)
    return array


def _parse_stroke(index: int, stroke: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Points (N, 2) in frame widths/heights, radii (N,) in frame widths, opacity
    in 0..1. Points may leave the frame by up to one frame size (-1..2); a
    radius is at most MAX_RADIUS."""
    if not isinstance(stroke, dict) or "points" not in stroke:
        raise _stroke_error(index, "must be an object with 'points'")
    points = _numbers(index, "points", stroke["points"], -1.0, 2.0)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise _stroke_error(index, "'points' must be a non-empty list of [x, y] pairs", "points")
    radius = _numbers(index, "radius", stroke.get("radius", 0.003), 0.0, MAX_RADIUS)
    if radius.ndim > 1 or (radius.ndim == 1 and len(radius) != len(points)):
        raise _stroke_error(index, "'radius' must be a number or one number per point", "radius")
    opacity = _numbers(index, "opacity", stroke.get("opacity", 1.0), 0.0, 1.0)
    if opacity.ndim:
        raise _stroke_error(index, "'opacity' must be one number", "opacity")
    return points, np.broadcast_to(radius, (len(points),)), float(opacity)


def rasterize_strokes(data: dict[str, Any], width: int = 256, height: int = 256) -> Image.Image:
    """Stroke polylines -> anti-aliased drawing (supersampled, box-filtered).

    Each stroke is drawn only within its bounding box, so the cost follows the
    strokes' extent and point count (at most MAX_STROKE_POINTS in all), not
    the canvas size times the stroke count. Raises InputError naming the stroke."""
    if not isinstance(data, dict) or data.get("schema") != "flipsketch.strokes":
        raise InputError(
            "Stroke data is not in the flipsketch.strokes schema.", "Send {'schema': 'flipsketch.strokes', ...}."
        )
    if data.get("version") != SCHEMA_VERSION:
        raise InputError(
            f"Stroke schema version {data.get('version')!r} is not supported.",
            f"This backend reads version {SCHEMA_VERSION}; update the add-on and the backend together.",
        )
    strokes = data.get("strokes")
    if not isinstance(strokes, list):
        raise InputError("Stroke data has no 'strokes' list.", "Send at least one stroke.")
    big_w, big_h = width * SUPERSAMPLE, height * SUPERSAMPLE
    ink = np.zeros((big_h, big_w), dtype=np.uint8)
    total_points = 0
    for index, stroke in enumerate(strokes):
        points, radius, opacity = _parse_stroke(index, stroke)
        total_points += len(points)
        if total_points > MAX_STROKE_POINTS:
            raise _stroke_error(index, f"the drawing has more than {MAX_STROKE_POINTS} points in all; simplify it")
        if stroke.get("cyclic") is True and len(points) > 2:  # a closed stroke: its last point joins the first
            points, radius = np.vstack([points, points[:1]]), np.r_[radius, radius[:1]]
        xy = points * (big_w, big_h) - 0.5  # PIL puts pixel centres at integers
        radii = np.maximum(radius * big_w, 0.5)
        x0, y0 = np.maximum(np.floor((xy - radii[:, None]).min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil((xy + radii[:, None]).max(axis=0)).astype(int) + 2, (big_w, big_h))
        if x0 >= x1 or y0 >= y1:
            continue  # wholly outside the frame
        layer = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
        draw = ImageDraw.Draw(layer)
        xy = xy - (x0, y0)
        for k in range(len(xy) - 1):
            (p0, r0), (p1, r1) = (xy[k], radii[k]), (xy[k + 1], radii[k + 1])
            length = math.hypot(*(p1 - p0))
            if length > 0:  # a quad whose width tapers from r0 to r1
                normal = np.array([p0[1] - p1[1], p1[0] - p0[0]]) / length
                quad = [p0 + normal * r0, p1 + normal * r1, p1 - normal * r1, p0 - normal * r0]
                draw.polygon([tuple(q) for q in quad], fill=255)
        for (x, y), r in zip(xy, radii, strict=True):  # round caps and joints
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        stroke_ink = np.asarray(layer)
        if opacity < 1:  # rounded up, so that 255 - ink rounds the gray value down
            stroke_ink = np.ceil(stroke_ink * np.float32(opacity)).astype(np.uint8)
        box = ink[y0:y1, x0:x1]
        np.maximum(box, stroke_ink, out=box)
    gray = Image.fromarray(255 - ink, "L").reduce(SUPERSAMPLE)
    return normalise_drawing(gray, detect_inverted=False)


def read_sketch(path: str | Path, width: int = 256, height: int = 256) -> Image.Image:
    """A sketch file as the CLI takes it: stroke JSON (.json) or any image."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return prepare_image(path, width, height)
    try:
        data = parse_json(path.read_bytes(), f"Stroke file '{path}'")
    except FileNotFoundError:
        raise InputError(f"Sketch file '{path}' does not exist.", "Check the path.") from None
    except OSError as exc:
        raise InputError(f"'{path}' cannot be read ({exc}).", "Check its permissions.") from None
    return rasterize_strokes(data, width, height)
