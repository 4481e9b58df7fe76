"""Input sketches: image files and stroke polylines -> a clean line drawing.

The model was trained on black lines on white. Users bring phone photos (EXIF
orientation, dim or unevenly lit paper), office scans (grey paper, panel
borders, 1-px lines at 4000 px), exports with transparency, 16-bit PNGs,
white-on-black chalk drawings, or (from Blender) stroke polylines; all of them
become an 8-bit grayscale drawing with white background here, or a specific
error that says what to do.

Image files are cleaned in four steps (`clean_drawing`): the polarity is read
from the whole image (a mostly dark image whose strong local deviations are
lighter is white-on-black); the paper's shading is estimated with a grey
closing and divided out; ink (clearly darker than the paper, relative to its
noise) is stretched to black and paper to white; ink lines that run along an
image edge (a panel cropped on its border) are cut off. Reduction to the
generation size thickens lines first (grey erosion) so 1-px lines survive.

Stroke schema (version 1; what the Blender add-on sends)::

    {"schema": "flipsketch.strokes", "version": 1,
     "strokes": [{"points": [[x, y], ...], "radius": 0.004, "opacity": 1.0}, ...]}

x, y are in [0, 1] across the frame from edge to edge (the camera frame's u, v),
origin top-left, y down, so pixel column i spans [i/W, (i+1)/W]; radius is a
fraction of the frame width (a number, or one per point); opacity is 0..1.
Points may lie up to REACH frame sizes outside the frame (a long line or a
large shape shows the part inside). Optional per stroke: "cyclic": true (a
closed stroke, its last point joins the first), "id" (traced strokes: the
same line keeps its id across a clip) and, API v3, "start_cap" / "end_cap":
"round" (the default) or "flat" (the line ends at its end point, as Grease
Pencil's flat caps; a closed stroke has none).

Optional, API v3: "frame": [x0, y0, x1, y1], the part of the square that shows
(a camera frame letterboxed into the square); the rest is paper, as the camera
shows nothing there.

Colour and fills, optional per stroke (API v3), as Grease Pencil draws them:
"color" is the gray of the line (0 black, the default, .. 1 white: paper, as a
holdout material shows it); "fill" 0..1 is the opacity of the region the points
enclose (0, the default: not filled; "opacity" 0 draws no line, so a fill-only
stroke is "opacity": 0 with a "fill") and "fill_color" its gray (default 0);
strokes with the same "fill_id" (an integer above 0) fill one region together,
by the even-odd rule, so inner outlines cut holes (Blender 5.1+ fills), with
the "fill" and "fill_color" of the first of them. The strokes are painted in
order, each one's fill and then its line, over white paper ("over"
compositing: gray' = gray + (colour - gray) x alpha, alpha = coverage x
opacity), so a later fill hides the lines under it as it does in Blender.
Grays are display values and blend as such (as 2D paint programs do).

Layer blend modes, optional (API v3): "layers" lists [{"blend": mode}, ...]
and a stroke with "layer": k belongs to layer k. A run of consecutive strokes
of one layer is painted over itself first and then blended onto what is under
it with the layer's mode, one of BLEND_MODES, by Blender's formulas
(`_blend`); "REGULAR" is plain "over".

Layer masks (Grease Pencil's), optional: a stroke with "mask": i shows only
where mask i covers. "mask_layers" lists the strokes of the layers that mask
([{"strokes": [...]}, ...]; "fill", "fill_id" and "opacity" as above; their
gray does not matter). "masks" lists, per mask, the mask layers folded in order
([[{"layer": k, "invert": false}, ...], ...]): plain ones add up, inverted ones
cut away, exactly as Blender's engine does (`_mask_coverage`). The mask layers
are not drawn by themselves: a mask layer that shows is also among "strokes".
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

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
REACH = 100.0  # frame sizes a point may lie past the frame (a large shape that shows only what lies inside)
MAX_MASK_LAYERS = 256  # Blender's limit too (GP_MAX_MASKBITS): later layers cannot mask
MAX_MASK_USES = 256  # mask layer uses over all masks: bounds the full-canvas folding work
MAX_FILL_ID = 2**31 - 1  # Blender's fill_id is a 32-bit integer
BLEND_MODES = ("REGULAR", "MULTIPLY", "ADD", "SUBTRACT", "DIVIDE", "HARDLIGHT")  # Grease Pencil's layer blend modes
MAX_LAYERS = 1024  # entries of "layers"
MAX_BLEND_RUNS = 256  # runs of strokes blended as a layer: bounds the full-canvas blending work
SHADING_SIDE = 256  # polarity is judged against a median paper at this size (pixels, longer side)
SHADING_WINDOW = 8  # shading window: 1/8 of the longer side; wider strokes count as paper shading
INK_CONTRAST = 0.15  # ink is at least 15 % darker than the paper around it
POLARITY_LEVEL = 24  # gray levels a pixel must differ from the local paper to vote on polarity
FRAME_BAND = 0.03  # panel borders are looked for within 3 % of each edge
FRAME_COVER = 0.6  # a row or column inked over 60 % of its length is a border line


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
    return to_gray_on_white(ImageOps.exif_transpose(image))  # phones store photos sideways plus a tag


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


def _blank_error() -> InputError:
    return InputError(
        "The drawing is blank: no lines were found (nothing is clearly darker than the paper).",
        "Draw something before animating; for a photo of paper use even light and a dark pen.",
    )


def normalise_drawing(gray: Image.Image, detect_inverted: bool = True, allow_blank: bool = False) -> Image.Image:
    """Black lines on white. An image from outside (`detect_inverted`) is cleaned
    by `clean_drawing`; a drawing made here (strokes, a previous clip's frame) is
    only checked. Refuses blank drawings (except frames of a training clip,
    where an empty frame is legitimate: it comes back white).

    Raises InputError when no lines are found and `allow_blank` is False."""
    if detect_inverted:
        return clean_drawing(gray, allow_blank)
    data = np.asarray(gray)
    if not allow_blank and (data < INK_LEVEL).mean() < MIN_INK_FRACTION:
        raise _blank_error()
    return Image.fromarray(np.ascontiguousarray(data), "L")


def _paper_level(data: np.ndarray) -> np.ndarray:
    """The paper under dark lines, full size, float32 0..255: a grey closing
    (max then min filter) over 1/SHADING_WINDOW of the longer side. Unlike a
    blur it keeps steps (grey paper in a white scanner margin, paper on a dark
    table) sharp, so they do not turn into lines; a line lying along an edge
    counts as paper there."""
    size = max(data.shape) // SHADING_WINDOW + 1
    # padded once for both passes (edge values repeated): light falling off
    # towards a corner is then followed exactly instead of being filled in
    padded = cv2.copyMakeBorder(data, size, size, size, size, cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, np.ones((size, size), np.uint8))
    return closed[size:-size, size:-size].astype(np.float32)


def _median_paper(data: np.ndarray) -> np.ndarray:
    """The paper under lines of either polarity, full size, float32 0..255: a
    median over 1/SHADING_WINDOW of the longer side, computed at SHADING_SIDE
    pixels (mirrored at the edges, so a border line stays a line)."""
    height, width = data.shape
    scale = min(1.0, SHADING_SIDE / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(data, small_size, interpolation=cv2.INTER_AREA)
    size = 2 * (max(small.shape) // (2 * SHADING_WINDOW)) + 1
    pad = size // 2
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    small = cv2.medianBlur(padded, size)[pad:-pad, pad:-pad]
    return cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def _white_on_black(data: np.ndarray) -> bool:
    """Whether the lines are lighter than the paper, judged over the whole image:
    the image is mostly dark (a border line does not decide it) and more pixels
    stand out lighter than the local paper than darker (dim paper with dark ink
    is not inverted)."""
    if np.median(data) >= 128:
        return False
    deviation = data.astype(np.float32) - _median_paper(data)
    noise = 1.4826 * float(np.median(np.abs(deviation)))
    level = max(POLARITY_LEVEL, 5 * noise)
    return int((deviation > level).sum()) > int((deviation < -level).sum())


def _edge_lines(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/columns to cut at the top, bottom, left and right: ink lines running
    along an edge (within FRAME_BAND of it), i.e. a panel border cropped on it."""
    cuts = [0, 0, 0, 0]
    for _ in range(2):  # borders on two sides shorten each other's lines: look twice
        view = ink[cuts[0] : ink.shape[0] - cuts[1], cuts[2] : ink.shape[1] - cuts[3]]
        if view.size == 0:
            break
        rows, cols = view.mean(axis=1), view.mean(axis=0)
        for side, profile in enumerate((rows, rows[::-1], cols, cols[::-1])):
            band = max(2, math.ceil(FRAME_BAND * len(profile)))
            lines = np.flatnonzero(profile[:band] > FRAME_COVER)
            if len(lines):
                cuts[side] += int(lines[-1]) + 2  # the line and its anti-aliased edge
    return cuts[0], cuts[1], cuts[2], cuts[3]


def clean_drawing(gray: Image.Image, allow_blank: bool = False) -> Image.Image:
    """A photographed, scanned or exported line drawing -> black lines on white.

    Inverts white-on-black drawings, divides out uneven paper (tones 90-255,
    vignetting), maps ink to black and paper to white (anti-aliasing kept) and
    cuts off panel borders along the edges. `gray` is 'L'; the result is 'L',
    possibly a few pixels smaller (a border cut off).

    Raises InputError when nothing clearly darker than the paper is found
    (unless `allow_blank`: then a white image of the same size)."""
    data = np.asarray(gray)
    if _white_on_black(data):
        data = 255 - data
    ratio = np.minimum(data.astype(np.float32) / np.maximum(_paper_level(data), 1.0), 1.0)
    paper = float(np.median(ratio))
    noise = 1.4826 * float(np.median(np.abs(ratio - paper)))
    ink = ratio < paper - max(6 * noise, INK_CONTRAST)
    if ink.mean() < MIN_INK_FRACTION:
        if allow_blank:
            return Image.new("L", gray.size, 255)
        raise _blank_error()
    black = float(np.percentile(ratio[ink], 10))
    white = paper - max(3 * noise, INK_CONTRAST / 3)
    clean = (np.clip((ratio - black) / (white - black), 0.0, 1.0) * 255).round().astype(np.uint8)
    top, bottom, left, right = _edge_lines(clean < 128)
    clean = clean[top : clean.shape[0] - bottom, left : clean.shape[1] - right]
    if min(clean.shape) < MIN_SIDE or (not allow_blank and (clean < INK_LEVEL).mean() < MIN_INK_FRACTION):
        raise InputError(
            "The drawing has nothing inside its panel border: no lines were found.",
            "Crop the image to the drawing, or draw inside the panel.",
        )
    return Image.fromarray(clean, "L")


def fit_to_frame(gray: Image.Image, width: int, height: int) -> Image.Image:
    """Scale a drawing into width×height with a white margin, aspect kept.

    When reducing by a factor f > 1.5, dark lines are first thickened by f - 1
    source pixels (grey erosion), so a 1-px line in a 4000-px scan keeps at
    least about half its darkness at the frame size instead of fading to paper."""
    box_w, box_h = round(width * (1 - 2 * MARGIN)), round(height * (1 - 2 * MARGIN))
    scale = min(box_w / gray.width, box_h / gray.height)
    size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    if 1 / scale > 1.5:
        kernel = np.ones((math.ceil(1 / scale) - 1,) * 2, np.uint8)
        gray = Image.fromarray(cv2.erode(np.asarray(gray), kernel, borderType=cv2.BORDER_REPLICATE), "L")
    resized = gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def prepare_image(source: str | Path | bytes, width: int = 256, height: int = 256) -> Image.Image:
    """Image file -> drawing of the generation size (mode 'L', width×height),
    ready for the sampler.

    Raises InputError for unreadable or blank drawings, and when the lines would
    not survive the reduction to width×height (a tiny mark in a large image)."""
    fitted = fit_to_frame(normalise_drawing(load_image(source)), width, height)
    inked = int((np.asarray(fitted) < INK_LEVEL).sum())
    if inked < MIN_INK_FRACTION * width * height:
        raise InputError(
            f"The drawing's lines do not survive the reduction to {width}×{height}: {inked} pixels of ink are left.",
            "Crop the image to the drawing, or draw with larger, bolder lines.",
        )
    return fitted


def prepare_reference(source: str | Path | bytes, width: int = 256, height: int = 256) -> Image.Image:
    """A previous clip's frame as the reference of an extension: used exactly as
    it is (no margin, no re-fitting), so chained extensions cannot drift."""
    gray = normalise_drawing(load_image(source), detect_inverted=False)
    return gray if gray.size == (width, height) else gray.resize((width, height), Image.Resampling.LANCZOS)


def _stroke_error(index: int, problem: str, name: str = "", where: str = "strokes") -> FieldError:
    label = f"Stroke {index}" if where == "strokes" else f"{where}[{index}]"
    return FieldError(
        f"{where}[{index}]{'.' + name if name else ''}",
        f"{label}: {problem}.",
        "Send strokes in the flipsketch.strokes schema (see sketch.py).",
    )


def _numbers(index: int, name: str, value: Any, low: float, high: float, where: str = "strokes") -> np.ndarray:
    """A stroke's numbers as float64, finite and within [low, high]."""
    if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
        raise _stroke_error(index, f"'{name}' must hold numbers", name, where)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _stroke_error(index, f"'{name}' must hold numbers", name, where) from None
    if not np.isfinite(array).all():
        raise _stroke_error(index, f"'{name}' has a value that is not a finite number", name, where)
    if array.size and (array.min() < low or array.max() > high):
        raise _stroke_error(index, f"'{name}' must stay within {low:g}..{high:g}", name, where)
    return array


@dataclass
class _Stroke:
    """A parsed stroke: points (N, 2) in frame widths/heights (closed strokes
    end on their first point), radii (N,) in frame widths, its line's opacity
    and gray (0..1), the opacity and gray of the region it encloses (fill 0:
    not filled), its fill group (0: it fills alone), the index of its mask
    in "masks" (-1: none) and of its layer in "layers" (-1: none), and whether
    its start and end are cut flat (else round)."""

    points: np.ndarray
    radius: np.ndarray
    opacity: float
    color: float = 0.0
    fill: float = 0.0
    fill_color: float = 0.0
    fill_id: int = 0
    mask: int = -1
    layer: int = -1
    flat_start: bool = False
    flat_end: bool = False


def _flat_cap(index: int, stroke: dict, name: str, where: str) -> bool:
    """Whether the stroke's optional cap `name` ("round", the default, or "flat") is flat."""
    cap = stroke.get(name, "round")
    if cap not in ("round", "flat"):
        raise _stroke_error(index, f"'{name}' is {cap!r}, not 'round' or 'flat'", name, where)
    return cap == "flat"


def _fraction(index: int, stroke: dict, name: str, where: str) -> float:
    """The stroke's optional one number 0..1 `name` (0 when absent)."""
    value = _numbers(index, name, stroke.get(name, 0.0), 0.0, 1.0, where)
    if value.ndim:
        raise _stroke_error(index, f"'{name}' must be one number", name, where)
    return float(value)


def _parse_stroke(index: int, stroke: Any, where: str = "strokes") -> _Stroke:
    """Points may leave the frame by up to REACH frame sizes; a radius is at
    most MAX_RADIUS."""
    if not isinstance(stroke, dict) or "points" not in stroke:
        raise _stroke_error(index, "must be an object with 'points'", where=where)
    points = _numbers(index, "points", stroke["points"], -REACH, 1.0 + REACH, where)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise _stroke_error(index, "'points' must be a non-empty list of [x, y] pairs", "points", where)
    radius = _numbers(index, "radius", stroke.get("radius", 0.003), 0.0, MAX_RADIUS, where)
    if radius.ndim > 1 or (radius.ndim == 1 and len(radius) != len(points)):
        raise _stroke_error(index, "'radius' must be a number or one number per point", "radius", where)
    opacity = _numbers(index, "opacity", stroke.get("opacity", 1.0), 0.0, 1.0, where)
    if opacity.ndim:
        raise _stroke_error(index, "'opacity' must be one number", "opacity", where)
    fill_id = stroke.get("fill_id", 0)
    if isinstance(fill_id, bool) or not isinstance(fill_id, int) or not 0 <= fill_id <= MAX_FILL_ID:
        raise _stroke_error(index, f"'fill_id' is {fill_id!r}, not a whole number 0..{MAX_FILL_ID}", "fill_id", where)
    radius = np.broadcast_to(radius, (len(points),))
    flat_start, flat_end = (_flat_cap(index, stroke, name, where) for name in ("start_cap", "end_cap"))
    if stroke.get("cyclic") is True and len(points) > 2:  # a closed stroke: its last point joins the first
        points, radius = np.vstack([points, points[:1]]), np.r_[radius, radius[:1]]
        flat_start = flat_end = False  # no ends, no caps
    return _Stroke(
        points,
        radius,
        float(opacity),
        color=_fraction(index, stroke, "color", where),
        fill=_fraction(index, stroke, "fill", where),
        fill_color=_fraction(index, stroke, "fill_color", where),
        fill_id=fill_id,
        flat_start=flat_start,
        flat_end=flat_end,
    )


def _mask_error(field: str, problem: str) -> FieldError:
    return FieldError(field, f"'{field}' {problem}.", "Send masks in the flipsketch.strokes schema (see sketch.py).")


def _parse_masks(data: dict[str, Any]) -> tuple[list[list[_Stroke]], list[list[tuple[int, bool]]]]:
    """The mask layers' strokes and the masks (per mask: (mask layer, invert)
    in folding order). Both are optional; at most MAX_MASK_LAYERS layers and
    MAX_MASK_USES layer uses over all masks."""
    layers_data, masks_data = data.get("mask_layers", []), data.get("masks", [])
    if not isinstance(layers_data, list) or len(layers_data) > MAX_MASK_LAYERS:
        raise _mask_error("mask_layers", f"must be a list of at most {MAX_MASK_LAYERS} mask layers")
    layers = []
    for k, layer in enumerate(layers_data):
        if not isinstance(layer, dict) or not isinstance(layer.get("strokes"), list):
            raise _mask_error(f"mask_layers[{k}]", "must be an object with a 'strokes' list")
        where = f"mask_layers[{k}].strokes"
        layers.append([_parse_stroke(j, stroke, where) for j, stroke in enumerate(layer["strokes"])])
    if not isinstance(masks_data, list):
        raise _mask_error("masks", "must be a list of masks")
    masks, uses = [], 0
    for i, mask in enumerate(masks_data):
        if not isinstance(mask, list) or not mask:
            raise _mask_error(f"masks[{i}]", "must be a non-empty list of {'layer': index, 'invert': bool}")
        uses += len(mask)
        if uses > MAX_MASK_USES:
            raise _mask_error(f"masks[{i}]", f"brings the mask layer uses of all masks over {MAX_MASK_USES}")
        entries = []
        for j, entry in enumerate(mask):
            field = f"masks[{i}][{j}]"
            if not isinstance(entry, dict):
                raise _mask_error(field, "must be an object {'layer': index, 'invert': bool}")
            layer, invert = entry.get("layer"), entry.get("invert", False)
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(layers):
                raise _mask_error(f"{field}.layer", f"is {layer!r}, not the index of one of {len(layers)} mask layers")
            if not isinstance(invert, bool):
                raise _mask_error(f"{field}.invert", f"is {invert!r}, not true or false")
            entries.append((layer, invert))
        masks.append(entries)
    return layers, masks


def _parse_layers(data: dict[str, Any]) -> list[str]:
    """The blend mode of each entry of the optional "layers" list."""
    entries = data.get("layers", [])
    if not isinstance(entries, list) or len(entries) > MAX_LAYERS:
        raise FieldError(
            "layers",
            f"'layers' must be a list of at most {MAX_LAYERS} layers.",
            "Send layers in the flipsketch.strokes schema (see sketch.py).",
        )
    blends = []
    for k, entry in enumerate(entries):
        blend = entry.get("blend", "REGULAR") if isinstance(entry, dict) else None
        if blend not in BLEND_MODES:
            raise FieldError(
                f"layers[{k}].blend",
                f"'layers[{k}].blend' is {blend!r}, not a Grease Pencil blend mode.",
                f"Use one of {', '.join(BLEND_MODES)}.",
            )
        blends.append(blend)
    return blends


def _parse_frame(data: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """The optional "frame" [x0, y0, x1, y1]: the part of the square that shows."""
    frame = data.get("frame")
    if frame is None:
        return None
    numbers = (
        frame if isinstance(frame, list) and len(frame) == 4 and all(type(v) in (int, float) for v in frame) else None
    )
    if numbers is None or not (0 <= numbers[0] < numbers[2] <= 1 and 0 <= numbers[1] < numbers[3] <= 1):
        raise FieldError(
            "frame",
            f"'frame' is {frame!r}, not [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1.",
            "Send the camera frame's rectangle inside the square, or leave 'frame' out.",
        )
    x0, y0, x1, y1 = (float(v) for v in numbers)
    return x0, y0, x1, y1


def _index_field(index: int, stroke: dict, name: str, count: int, what: str) -> int:
    """The stroke's optional index `name` into a list of `count` `what` (-1 when absent)."""
    value = stroke.get(name)
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise _stroke_error(index, f"'{name}' is {value!r}, not the index of one of {count} {what}", name)
    return value


def _box(xy: np.ndarray, reach: np.ndarray | float, big_w: int, big_h: int) -> tuple[int, int, int, int] | None:
    """The canvas box (x0, y0, x1, y1) around points `xy` (canvas pixels)
    grown by `reach`; None when it lies wholly outside the canvas."""
    reach = np.broadcast_to(reach, (len(xy),))[:, None]
    x0, y0 = np.maximum(np.floor((xy - reach).min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil((xy + reach).max(axis=0)).astype(int) + 2, (big_w, big_h))
    return None if x0 >= x1 or y0 >= y1 else (int(x0), int(y0), int(x1), int(y1))


Drawn = tuple[tuple[slice, slice], np.ndarray]  # where on the canvas (rows, columns), and the uint8 coverage there


def _draw_line(stroke: _Stroke, big_w: int, big_h: int) -> Drawn | None:
    """The stroke's line (round joints, round or flat caps), 0/255 over its box; None
    when it lies wholly outside the canvas. Each stroke is drawn only within
    its box, so the cost follows its extent, not the canvas size."""
    xy = stroke.points * (big_w, big_h) - 0.5  # PIL puts pixel centres at integers
    radii = np.maximum(stroke.radius * big_w, 0.5)
    box = _box(xy, radii, big_w, big_h)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    layer = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(layer)
    xy = xy - (x0, y0)
    for k in range(len(xy) - 1):
        (p0, r0), (p1, r1) = (xy[k], radii[k]), (xy[k + 1], radii[k + 1])
        length = math.hypot(*(p1 - p0))
        if length > 0:  # a quad whose width tapers from r0 to r1
            normal = np.array([p0[1] - p1[1], p1[0] - p0[0]]) / length
            quad = [p0 + normal * r0, p1 + normal * r1, p1 - normal * r1, p0 - normal * r0]
            draw.polygon([tuple(q) for q in quad], fill=255)
    ends = len(xy) > 1
    rounded = slice(1 if ends and stroke.flat_start else 0, len(xy) - 1 if ends and stroke.flat_end else len(xy))
    for (x, y), r in zip(xy[rounded], radii[rounded], strict=True):  # round joints and caps
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return (slice(y0, y1), slice(x0, x1)), np.asarray(layer)


def _fill_regions(strokes: list[_Stroke]) -> dict[int, list[_Stroke]]:
    """Where each fill is painted: the index of the stroke it is painted with
    -> the strokes whose outlines bound it. A stroke of fill_id 0 fills alone;
    strokes sharing a fill_id fill one region, painted with the first of them
    (its "fill" and "fill_color"). Only fills with an opacity above 0."""
    regions: dict[int, list[_Stroke]] = {}
    first: dict[int, int] = {}
    for index, stroke in enumerate(strokes):
        at = index if stroke.fill_id == 0 else first.setdefault(stroke.fill_id, index)
        regions.setdefault(at, []).append(stroke)
    return {index: outlines for index, outlines in regions.items() if strokes[index].fill > 0}


def _draw_region(outlines: list[_Stroke], big_w: int, big_h: int) -> Drawn | None:
    """The region the outlines enclose by the even-odd rule (one outline: its
    inside; an outline inside another: a hole), 0/255 over its box. Outlines of
    fewer than 3 points bound nothing, as in Blender."""
    rings = [stroke.points * (big_w, big_h) - 0.5 for stroke in outlines if len(stroke.points) >= 3]
    box = _box(np.concatenate(rings), 0.0, big_w, big_h) if rings else None
    if box is None:
        return None
    x0, y0, x1, y1 = box
    region = np.zeros((y1 - y0, x1 - x0), bool)
    for xy in rings:
        ring = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(ring).polygon([tuple(p) for p in xy - (x0, y0)], fill=255)
        region ^= np.asarray(ring) > 0
    return (slice(y0, y1), slice(x0, x1)), region.astype(np.uint8) * np.uint8(255)


def _painted(strokes: list[_Stroke], big_w: int, big_h: int) -> Iterator[tuple[int, Drawn, float, float]]:
    """What the strokes paint, in Blender's order (each stroke's fill, then
    its line): (stroke index, where and coverage, opacity, gray)."""
    regions = _fill_regions(strokes)
    for index, stroke in enumerate(strokes):
        fill = _draw_region(regions[index], big_w, big_h) if index in regions else None
        if fill is not None:
            yield index, fill, stroke.fill, stroke.fill_color
        line = _draw_line(stroke, big_w, big_h) if stroke.opacity > 0 else None
        if line is not None:
            yield index, line, stroke.opacity, stroke.color


def _mask_coverage(mask: list[tuple[int, bool]], layers: list[list[_Stroke]], big_w: int, big_h: int) -> np.ndarray:
    """(big_h, big_w) float32 in 0..1: how much of a masked layer shows, as
    Blender's Grease Pencil engine computes it. A revealage buffer starts at 1;
    each fill and line of a mask layer multiplies it by (1 - its coverage); it
    is flipped (1 - r) when the mask entries switch between plain and inverted,
    and at the end unless the last entry is inverted. So plain masks add up
    (union), inverted ones cut away, in the given order."""
    reveal = np.ones((big_h, big_w), np.float32)
    inverted = False
    for number, (layer, invert) in enumerate(mask):
        if invert != inverted:
            if number:
                np.subtract(1.0, reveal, out=reveal)
            inverted = invert
        for _, (where, cover), opacity, _ in _painted(layers[layer], big_w, big_h):
            reveal[where] *= 1.0 - cover * np.float32(opacity / 255.0)
    return reveal if inverted else np.subtract(1.0, reveal, out=reveal)


def _blend(canvas: np.ndarray, color: np.ndarray, alpha: np.ndarray, mode: str) -> None:
    """Blend a layer (c: its gray premultiplied by its alpha a) onto the
    drawing's gray g, in place, by Blender's `blend_mode_output`
    (gpencil_common_lib.glsl; its associated-alpha colour is multiplied by
    alpha once more in all but Regular and Multiply): REGULAR g(1 - a) + c;
    MULTIPLY g(1 - a + c); ADD g + ca; SUBTRACT g - ca; DIVIDE g / (1 - ca);
    HARDLIGHT the standard hard light of s = 0.5(1 - a) + ca over g.
    Clamped to 0..1."""
    if mode == "REGULAR":
        canvas *= 1.0 - alpha
        canvas += color
    elif mode == "MULTIPLY":
        canvas *= 1.0 - alpha + color
    elif mode == "ADD":
        canvas += color * alpha
    elif mode == "SUBTRACT":
        canvas -= color * alpha
    elif mode == "DIVIDE":
        canvas /= np.maximum(1.0 - color * alpha, np.float32(1e-6))
    else:  # HARDLIGHT
        source = 0.5 * (1.0 - alpha) + color * alpha
        canvas[...] = np.where(source <= 0.5, 2.0 * source * canvas, 1.0 - 2.0 * (1.0 - source) * (1.0 - canvas))
    np.clip(canvas, 0.0, 1.0, out=canvas)


class _LayerBuffer:
    """A layer's strokes painted over each other before the layer is blended
    onto the drawing (Blender's layer framebuffer): gray premultiplied by
    alpha, and alpha, over the whole canvas; only the box painted is blended
    and cleared."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.color = np.zeros(shape, np.float32)
        self.alpha = np.zeros(shape, np.float32)
        self.box: tuple[int, int, int, int] | None = None  # rows y0:y1, columns x0:x1 painted

    def paint(self, where: tuple[slice, slice], alpha: np.ndarray, gray: float) -> None:
        color, covered = self.color[where], self.alpha[where]
        color *= 1.0 - alpha
        color += np.float32(gray) * alpha
        covered *= 1.0 - alpha
        covered += alpha
        rows, columns = where
        box = (rows.start, rows.stop, columns.start, columns.stop)
        if self.box is not None:
            box = (
                min(box[0], self.box[0]),
                max(box[1], self.box[1]),
                min(box[2], self.box[2]),
                max(box[3], self.box[3]),
            )
        self.box = box

    def blend_onto(self, canvas: np.ndarray, mode: str) -> None:
        if self.box is None:
            return
        y0, y1, x0, x1 = self.box
        where = (slice(y0, y1), slice(x0, x1))
        _blend(canvas[where], self.color[where], self.alpha[where], mode)
        self.color[where], self.alpha[where], self.box = 0.0, 0.0, None


def rasterize_strokes(data: dict[str, Any], width: int = 256, height: int = 256) -> Image.Image:
    """Stroke polylines (the schema in the module docstring) -> anti-aliased
    drawing (supersampled, box-filtered), mode 'L', width×height.

    A stroke with a "mask" shows only where its mask covers (see
    `_mask_coverage`). At most MAX_STROKE_POINTS points in all, a mask layer's
    points counted once per mask that uses it. Raises InputError naming the
    stroke or mask field at fault."""
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
    layers, masks = _parse_masks(data)
    blends = _parse_layers(data)
    shown = _parse_frame(data)
    parsed, total_points = [], 0
    for index, stroke in enumerate(strokes):
        parsed.append(_parse_stroke(index, stroke))
        total_points += len(parsed[-1].points)
        if total_points > MAX_STROKE_POINTS:
            raise _stroke_error(index, f"the drawing has more than {MAX_STROKE_POINTS} points in all; simplify it")
        parsed[-1].mask = _index_field(index, stroke, "mask", len(masks), "masks")
        parsed[-1].layer = _index_field(index, stroke, "layer", len(blends), "layers")
    blended = [s.layer for i, s in enumerate(parsed) if s.layer >= 0 and (i == 0 or parsed[i - 1].layer != s.layer)]
    if len(blended) > MAX_BLEND_RUNS:
        raise _stroke_error(
            len(parsed) - 1, f"the drawing's layers come in more than {MAX_BLEND_RUNS} runs of strokes; merge layers"
        )
    runs = [s.mask for i, s in enumerate(parsed) if s.mask >= 0 and (i == 0 or parsed[i - 1].mask != s.mask)]
    for mask_index in runs:  # a mask's coverage is made once per run of strokes that use it
        total_points += sum(len(stroke.points) for layer, _ in masks[mask_index] for stroke in layers[layer])
        if total_points > MAX_STROKE_POINTS:
            raise _mask_error(
                f"masks[{mask_index}]",
                f"brings the drawing over {MAX_STROKE_POINTS} points in all (a mask layer counts once per run of "
                "strokes its mask applies to); simplify the mask layers",
            )
    big_w, big_h = width * SUPERSAMPLE, height * SUPERSAMPLE
    canvas = np.ones((big_h, big_w), np.float32)  # white paper
    coverage, covered = None, -1
    buffer, buffered = None, -1  # the layer being painted apart, to be blended
    for index, (where, cover), opacity, gray in _painted(parsed, big_w, big_h):
        mask, layer = parsed[index].mask, parsed[index].layer
        if mask != covered:  # one mask's coverage in memory at a time
            coverage, covered = None, mask
            coverage = _mask_coverage(masks[mask], layers, big_w, big_h) if mask >= 0 else None
        if buffer is not None and layer != buffered:
            buffer.blend_onto(canvas, blends[buffered])
        alpha = cover * np.float32(opacity / 255.0)
        if coverage is not None:
            alpha *= coverage[where]
        if layer < 0 or blends[layer] == "REGULAR":
            box = canvas[where]
            box += (np.float32(gray) - box) * alpha
            continue
        buffer = buffer or _LayerBuffer((big_h, big_w))
        buffer.paint(where, alpha, gray)
        buffered = layer
    if buffer is not None:
        buffer.blend_onto(canvas, blends[buffered])
    if shown is not None:  # only the camera frame shows: paper around it
        x0, y0, x1, y1 = (round(v * n) for v, n in zip(shown, (big_w, big_h, big_w, big_h), strict=True))
        inside = canvas[y0:y1, x0:x1].copy()
        canvas[...] = 1.0
        canvas[y0:y1, x0:x1] = inside
    small = canvas.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).mean(axis=(1, 3))
    # rounded down, so a half-opaque black line on white is 127 (ink rounded up)
    gray = np.clip(np.floor(small * 255.0 + 1e-3), 0, 255).astype(np.uint8)
    return normalise_drawing(Image.fromarray(gray, "L"), detect_inverted=False)


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
