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
Optional per stroke: "cyclic": true (a closed stroke, its last point joins the
first) and "id" (traced strokes: the same line keeps its id across a clip).

Layer masks (Grease Pencil's), optional: a stroke with "mask": i shows only
where mask i covers. "mask_layers" lists the strokes of the layers that mask
([{"strokes": [...]}, ...]; their points may lie up to MASK_REACH frame sizes
outside the frame, and a stroke may carry "fill": 0..1, the opacity of the
region its points enclose; "opacity" 0 draws no line). "masks" lists, per mask,
the mask layers folded in order ([[{"layer": k, "invert": false}, ...], ...]):
plain ones add up, inverted ones cut away, exactly as Blender's engine does
(`_mask_coverage`). The mask layers are not drawn by themselves: a mask layer
that shows is also among "strokes".
"""

from __future__ import annotations

import io
import math
import warnings
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
MASK_REACH = 100.0  # frame sizes a mask layer's points may lie past the frame
MAX_MASK_LAYERS = 256  # Blender's limit too (GP_MAX_MASKBITS): later layers cannot mask
MAX_MASK_USES = 256  # mask layer uses over all masks: bounds the full-canvas folding work
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
    end on their first point), radii (N,) in frame widths, opacity 0..1, and
    the index of its mask in "masks" (-1: none); a mask layer's stroke: the
    opacity of the region it encloses (0: not filled)."""

    points: np.ndarray
    radius: np.ndarray
    opacity: float
    mask: int = -1
    fill: float = 0.0


def _parse_stroke(index: int, stroke: Any, where: str = "strokes", reach: float = 1.0) -> _Stroke:
    """Points may leave the frame by up to `reach` frame sizes (1 for the
    drawing: -1..2); a radius is at most MAX_RADIUS."""
    if not isinstance(stroke, dict) or "points" not in stroke:
        raise _stroke_error(index, "must be an object with 'points'", where=where)
    points = _numbers(index, "points", stroke["points"], -reach, 1.0 + reach, where)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise _stroke_error(index, "'points' must be a non-empty list of [x, y] pairs", "points", where)
    radius = _numbers(index, "radius", stroke.get("radius", 0.003), 0.0, MAX_RADIUS, where)
    if radius.ndim > 1 or (radius.ndim == 1 and len(radius) != len(points)):
        raise _stroke_error(index, "'radius' must be a number or one number per point", "radius", where)
    opacity = _numbers(index, "opacity", stroke.get("opacity", 1.0), 0.0, 1.0, where)
    if opacity.ndim:
        raise _stroke_error(index, "'opacity' must be one number", "opacity", where)
    radius = np.broadcast_to(radius, (len(points),))
    if stroke.get("cyclic") is True and len(points) > 2:  # a closed stroke: its last point joins the first
        points, radius = np.vstack([points, points[:1]]), np.r_[radius, radius[:1]]
    return _Stroke(points, radius, float(opacity))


def _parse_mask_stroke(index: int, stroke: Any, where: str) -> _Stroke:
    """A stroke of a mask layer: may reach MASK_REACH frame sizes past the
    frame (a large shape that cuts only what lies inside it); "fill" (0..1)."""
    parsed = _parse_stroke(index, stroke, where, MASK_REACH)
    if "fill" in stroke:
        fill = _numbers(index, "fill", stroke["fill"], 0.0, 1.0, where)
        if fill.ndim:
            raise _stroke_error(index, "'fill' must be one number", "fill", where)
        parsed.fill = float(fill)
    return parsed


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
        layers.append([_parse_mask_stroke(j, stroke, where) for j, stroke in enumerate(layer["strokes"])])
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


def _box(xy: np.ndarray, reach: np.ndarray | float, big_w: int, big_h: int) -> tuple[int, int, int, int] | None:
    """The canvas box (x0, y0, x1, y1) around points `xy` (canvas pixels)
    grown by `reach`; None when it lies wholly outside the canvas."""
    reach = np.broadcast_to(reach, (len(xy),))[:, None]
    x0, y0 = np.maximum(np.floor((xy - reach).min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil((xy + reach).max(axis=0)).astype(int) + 2, (big_w, big_h))
    return None if x0 >= x1 or y0 >= y1 else (int(x0), int(y0), int(x1), int(y1))


Drawn = tuple[tuple[slice, slice], np.ndarray]  # where on the canvas (rows, columns), and the uint8 coverage there


def _draw_line(stroke: _Stroke, big_w: int, big_h: int) -> Drawn | None:
    """The stroke's line (round caps and joints), 0/255 over its box; None
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
    for (x, y), r in zip(xy, radii, strict=True):  # round caps and joints
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return (slice(y0, y1), slice(x0, x1)), np.asarray(layer)


def _draw_fill(stroke: _Stroke, big_w: int, big_h: int) -> Drawn | None:
    """The region the stroke's points enclose, 0/255 over its box."""
    xy = stroke.points * (big_w, big_h) - 0.5
    box = _box(xy, 0.0, big_w, big_h)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    region = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(region).polygon([tuple(p) for p in xy - (x0, y0)], fill=255)
    return (slice(y0, y1), slice(x0, x1)), np.asarray(region)


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
        for stroke in layers[layer]:  # its fill, then its line, as Blender draws them
            fill = _draw_fill(stroke, big_w, big_h) if stroke.fill > 0 else None
            line = _draw_line(stroke, big_w, big_h) if stroke.opacity > 0 else None
            for opacity, drawn in ((stroke.fill, fill), (stroke.opacity, line)):
                if drawn is not None:
                    where, cover = drawn
                    reveal[where] *= 1.0 - cover * np.float32(opacity / 255.0)
    return reveal if inverted else np.subtract(1.0, reveal, out=reveal)


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
    parsed, total_points = [], 0
    for index, stroke in enumerate(strokes):
        parsed.append(_parse_stroke(index, stroke))
        total_points += len(parsed[-1].points)
        if total_points > MAX_STROKE_POINTS:
            raise _stroke_error(index, f"the drawing has more than {MAX_STROKE_POINTS} points in all; simplify it")
        mask = stroke.get("mask")
        if mask is not None:
            if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask < len(masks):
                raise _stroke_error(index, f"'mask' is {mask!r}, not the index of one of {len(masks)} masks", "mask")
            parsed[-1].mask = mask
    for i, mask in enumerate(masks):
        total_points += sum(len(stroke.points) for layer, _ in mask for stroke in layers[layer])
        if total_points > MAX_STROKE_POINTS:
            raise _mask_error(
                f"masks[{i}]",
                f"brings the drawing over {MAX_STROKE_POINTS} points in all (a mask layer counts once per mask "
                "that uses it); simplify the mask layers",
            )
    big_w, big_h = width * SUPERSAMPLE, height * SUPERSAMPLE
    ink = np.zeros((big_h, big_w), dtype=np.uint8)
    for mask_index in sorted({stroke.mask for stroke in parsed}):  # one mask's coverage in memory at a time
        coverage = _mask_coverage(masks[mask_index], layers, big_w, big_h) if mask_index >= 0 else None
        for stroke in parsed:
            drawn = _draw_line(stroke, big_w, big_h) if stroke.mask == mask_index else None
            if drawn is None:
                continue  # another mask's, or wholly outside the frame
            where, stroke_ink = drawn
            if coverage is not None or stroke.opacity < 1:  # rounded up, so that 255 - ink rounds the gray down
                scale = np.float32(stroke.opacity) * (coverage[where] if coverage is not None else np.float32(1))
                stroke_ink = np.ceil(stroke_ink * scale).astype(np.uint8)
            box = ink[where]
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
