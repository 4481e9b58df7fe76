"""Grease Pencil drawing -> stroke polylines in the square frame (schema v1).

What goes out is what Blender draws through the camera at that frame: the
evaluated drawing (Grease Pencil modifiers and Geometry Nodes applied, Build
and Time Offset at that frame, each modifier's layer and material filters
honoured; the layers' radius offset included), each layer through its own
transform (its parent object or bone when it has one), without hidden layers
(directly or through any hidden layer group) and without strokes that draw
nothing (material hidden or showing neither line nor fill, zero opacity from
the Opacity modifier, the layer or the material's colour; before Blender 5.1
the material's Stroke and Fill switches say what a stroke shows, from 5.1 the
stroke's own hide_stroke and fill_id do). Closed strokes (Box, Circle tools)
go out closed, open ones with their caps (round or flat). Only what the camera
frame shows goes out: strokes wholly outside the frame, behind the camera or
outside its clip range are left out, and where strokes cross the frame's edge
the backend cuts them there ("frame"); an object hidden in the viewport is
refused. The object's Flip shader effects mirror what goes out, as they mirror
it on screen (the Placement keeps them, so the results written back into the
object are mirrored once more and show as generated); its other shader effects
(blur, shadow, wave...) are not applied. Line widths scale with the object's
transform only (Blender's `mat3_to_scale`), not the layer's or its parent's.
Point opacity is multiplied by the layer's opacity and the alpha of its
material's colour (a fill's: the fill colour's alpha times the stroke's fill
opacity; point opacity does not touch fills).

Fills go out as fills and colours as grays, so the backend paints the
strokes in order as Blender does and a later fill hides the lines under it.
A line's colour is its material's, with the vertex paint colour and then the
layer's tint mixed over it (Blender's shader); a fill's likewise with the
stroke's fill colour; a holdout material shows the paper (white). The gray is
the colour's Rec. 709 luminance, sRGB-encoded (the Standard view transform);
a gradient or texture fill counts as its fill colour. From Blender 5.1,
strokes sharing a fill_id fill one region with holes (even-odd), with the
fill of the first of them. The materials are the evaluated object's.

Layer masks are applied as Blender's Grease Pencil engine applies them: a
layer with Use Masks on (and on in every layer group above it) is masked by
its mask entries that are not hidden and name another layer that is shown
(not a group; index below 256); with none of those it draws unmasked. The
masks are folded in layer order (not list order): plain ones add up, inverted
ones cut away (the backend's `sketch._mask_coverage`). A mask layer covers
with its evaluated lines (point opacity; its layer opacity does not count)
and fills (where its material shows fill; the stroke's fill opacity), through
its own transform; its own masks do not apply to it. The mask layers' strokes
and the masks go out with the drawing; the backend rasterises the coverage
and multiplies the masked strokes by it.

A layer whose blend mode is not Regular (Multiply, Add, Subtract, Divide,
Hard Light) goes out with its mode: the backend paints its strokes apart and
blends them onto what is under them by Blender's formulas (`sketch._blend`).

The backend rasterises; Blender only projects. The placement (frame matrix
and the drawing's plane) travels with the job, so the results are put back
where the drawing was even if the camera moves while the job runs.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import bpy
import numpy as np

from .gpencil import read_strokes
from .projection import Frame

SCHEMA_VERSION = 1
MAX_MASK_INDEX = 256  # Blender's GP_MAX_MASKBITS: a layer at this index or later cannot mask
REACH = 100.0  # frame sizes a stroke may reach past the frame (the backend's sketch.REACH)
GENERATED_PREFIX = "FlipSketch: "  # layers the importer creates
# Blender 5.1+: a stroke, not its material, says whether it shows its line and fill (hide_stroke, fill_id)
STROKES_CHOOSE = bpy.app.version >= (5, 1, 0)
DEFAULT_FILL_ALPHA = 1.0 if STROKES_CHOOSE else 0.0  # Blender's default material fills (black) from 5.1


class ExportError(Exception):
    """A drawing that cannot be sent; the message says what to do."""


@dataclass
class Placement:
    """Where results go back: the frame and the plane of the drawing."""

    matrix: list[list[float]]
    aspect: float
    point: list[float]  # a world point on the drawing plane (its centroid)
    normal: list[float]  # the plane's normal: the camera's viewing axis (parallel to the image plane)
    flip: list[bool] = field(default_factory=lambda: [False, False])  # the object's Flip effects: [x, y]
    object_matrix: list[list[float]] | None = None  # the object's world matrix then (None: jobs made before it)

    def object_to_world(self, ob) -> np.ndarray:
        """(4, 4) `ob`'s world matrix at job time: results written into the
        object land where the drawing was, wherever the object is now."""
        return np.array(self.object_matrix if self.object_matrix is not None else ob.matrix_world)

    def frame(self) -> Frame:
        return Frame(np.array(self.matrix), self.aspect)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _Gathered:
    """The visible strokes of the layers, in world space, concatenated."""

    world: np.ndarray  # (N, 3)
    radius: np.ndarray  # (N,) world units
    opacity: np.ndarray  # (N,) of the line: point opacity x line alpha x layer opacity (a mask layer's: no layer)
    color: np.ndarray  # (N,) gray of the line there, 0..1
    counts: np.ndarray  # (S,) points per stroke
    closed: np.ndarray  # (S,) bool
    fill: np.ndarray  # (S,) opacity of the enclosed region (0: no fill)
    fill_color: np.ndarray  # (S,) its gray, 0..1
    fill_id: np.ndarray  # (S,) strokes with the same number above 0 fill one region together
    mask: np.ndarray  # (S,) index of the stroke's mask in the schema's "masks" (-1: none)
    layer: np.ndarray  # (S,) index of the stroke's layer in the schema's "layers" (-1: a Regular layer)
    flat_caps: np.ndarray  # (S, 2) bool: start and end cut flat


_POINT_FIELDS = {"world", "radius", "opacity", "color"}  # the (N, ...) fields of _Gathered; the others are (S,)


def _select(gathered: _Gathered, keep: np.ndarray) -> _Gathered:
    """The strokes where `keep` (S,) is True."""
    points = np.repeat(keep, gathered.counts)
    return _Gathered(**{name: v[points if name in _POINT_FIELDS else keep] for name, v in vars(gathered).items()})


@contextmanager
def scene_at(scene, frame_number: int) -> Iterator[None]:
    """Evaluate `scene` at `frame_number` inside the block, then put the
    playhead (frame and subframe) back where it was."""
    current, subframe = scene.frame_current, scene.frame_subframe
    if frame_number == current:
        yield
        return
    scene.frame_set(frame_number)
    try:
        yield
    finally:
        scene.frame_set(current, subframe=subframe)


def is_hidden(layer) -> bool:
    """A layer hidden itself or through any of its layer groups."""
    node = layer
    while node is not None:
        if node.hide:
            return True
        node = node.parent_group
    return False


def line_scale(object_matrix) -> float:
    """How much the object's transform widens its lines, as Blender's Grease
    Pencil engine does it (BLI `mat3_to_scale`): the length of (1, 1, 1)/sqrt 3
    under the object's 3x3 world matrix. The layer's own transform and its
    parent move the points but leave the line width alone."""
    return float(np.linalg.norm(np.array(object_matrix)[:3, :3] @ np.full(3, 1 / np.sqrt(3))))


def layer_matrix(ob, layer, depsgraph) -> np.ndarray:
    """(4, 4) layer-local -> world, as Blender draws the layer: the object's
    transform, or (for a layer with a parent) the parent object's or parent
    bone's evaluated transform with the layer's parent inverse."""
    if layer.parent is None:
        return np.array(ob.matrix_world @ layer.matrix_local)
    parent = layer.parent.original.evaluated_get(depsgraph)
    matrix = parent.matrix_world
    if parent.type == "ARMATURE" and layer.parent_bone and parent.pose is not None:
        bone = parent.pose.bones.get(layer.parent_bone)
        if bone is not None:
            matrix = matrix @ bone.matrix
    return np.array(matrix @ layer.matrix_parent_inverse @ layer.matrix_local)


def material_alphas(ob) -> tuple[np.ndarray, np.ndarray]:
    """Per material slot (at least one row: Blender's default material):
    (alpha of its line, alpha of its fill), 0..1: the colour's alpha, 0 where
    the material is hidden (before Blender 5.1 also where it does not show
    lines / fills; from 5.1 each stroke says so). A slot without a Grease
    Pencil material draws with the default material: an opaque black line,
    and from 5.1 an opaque black fill where the stroke has a fill_id (before
    5.1 no fill)."""
    line, fill = [], []
    for slot in ob.material_slots:
        style = slot.material.grease_pencil if slot.material is not None else None
        if style is None:
            line.append(1.0)
            fill.append(DEFAULT_FILL_ALPHA)
            continue
        line.append(line_alpha(style))
        fill.append(style.fill_color[3] if not style.hide and (STROKES_CHOOSE or style.show_fill) else 0.0)
    return np.array(line or [1.0], float), np.array(fill or [DEFAULT_FILL_ALPHA], float)


def material_colors(ob) -> tuple[np.ndarray, np.ndarray]:
    """Per material slot (at least one row: Blender's default material, a
    black line): the scene-linear RGB of its line and of its fill, (M, 3) each;
    NaN where the material is a holdout (it shows the paper)."""
    line, fill = [], []
    for slot in ob.material_slots:
        style = slot.material.grease_pencil if slot.material is not None else None
        if style is None:
            line.append((0.0, 0.0, 0.0))
            fill.append((0.0, 0.0, 0.0))
            continue
        line.append((np.nan,) * 3 if style.use_stroke_holdout else tuple(style.color[:3]))
        fill.append((np.nan,) * 3 if style.use_fill_holdout else tuple(style.fill_color[:3]))
    return np.array(line or [(0.0, 0.0, 0.0)], float), np.array(fill or [(0.0, 0.0, 0.0)], float)


def display_gray(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) scene-linear RGB -> (...) gray 0..1 as the Standard view
    transform shows it: Rec. 709 luminance, sRGB-encoded (IEC 61966-2-1).
    NaN (a holdout) -> 1, the paper."""
    y = np.clip(rgb @ np.array([0.2126, 0.7152, 0.0722]), 0.0, 1.0)
    gray = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1 / 2.4) - 0.055)
    return np.where(np.isnan(gray), 1.0, gray)


def _mixed(base: np.ndarray, over: np.ndarray, factor: np.ndarray | float) -> np.ndarray:
    """Blender's mix: base + (over - base) x factor (NaN, a holdout, stays NaN)."""
    return base + (over - base) * np.asarray(factor)[..., None]


def line_alpha(style) -> float:
    """0..1: how opaque a Grease Pencil material style (MaterialGPencilStyle)
    draws lines: its colour's alpha, 0 when hidden or (before Blender 5.1)
    when its Stroke switch is off."""
    return style.color[3] if not style.hide and (STROKES_CHOOSE or style.show_stroke) else 0.0


def uses_masks(layer) -> bool:
    """Whether `layer` is masked at all: its own Use Masks and every layer
    group above it (Blender's TreeNode::use_masks)."""
    node = layer
    while node is not None:
        if not node.use_masks:
            return False
        node = node.parent_group
    return True


def mask_entries(layers, layer) -> tuple[tuple[int, bool], ...]:
    """The masks Blender's engine applies to `layer` (one of `layers`, the
    data's layers): (index of the mask layer in `layers`, inverted), in layer
    order, the order they are folded in. A mask counts when it is not hidden,
    names another layer (not a group) that is shown, and that layer's index is
    below MAX_MASK_INDEX. Empty: the layer draws unmasked."""
    if not uses_masks(layer):
        return ()
    entries: dict[int, bool] = {}
    for mask in layer.mask_layers:
        index = layers.find(mask.name)
        if mask.hide or index < 0 or mask.name == layer.name or index >= MAX_MASK_INDEX or is_hidden(layers[index]):
            continue
        entries[index] = mask.invert  # named twice: the last entry's invert wins, as in Blender's bitmap
    return tuple(sorted(entries.items()))


def _layers_to_send(ob, evaluated, active_layer_only: bool, only_layer) -> list:
    if only_layer is not None or active_layer_only:
        chosen = only_layer if only_layer is not None else ob.data.layers.active
        return [] if chosen is None else [evaluated.layers[chosen.name]]
    # the user's visible drawing: generated layers are results, not input
    return [layer for layer in evaluated.layers if not is_hidden(layer) and not layer.name.startswith(GENERATED_PREFIX)]


def _fill_groups(fill_id: np.ndarray, fill_alpha: np.ndarray, fill_gray: np.ndarray):
    """Blender 5.1+: strokes sharing a fill_id fill one region, with the fill
    of the first of them. -> (fill alpha, fill gray, group number: 1.. for a
    group of two or more strokes, 0 for a stroke that fills alone), (S,) each."""
    _, first, inverse, sizes = np.unique(fill_id, return_index=True, return_inverse=True, return_counts=True)
    grouped = (fill_id != 0) & (sizes[inverse] > 1)
    alpha = np.where(grouped, fill_alpha[first][inverse], fill_alpha)
    gray = np.where(grouped, fill_gray[first][inverse], fill_gray)
    return alpha, gray, np.where(grouped, inverse + 1, 0)


def _read_layer(ob, layer, frame_number: int, depsgraph, as_mask: bool = False) -> _Gathered | None:
    """The visible strokes of `layer` (evaluated) at `frame_number`, None when
    it has none. A stroke's line shows where its points' opacity x its
    material's line alpha (x the layer's opacity) is above 0; its fill, where
    its material fills, as opaque as the fill (fill alpha x the stroke's fill
    opacity, x the layer's opacity), from 3 points on; a stroke showing neither
    is left out. The materials are the evaluated object's (Geometry Nodes may
    add some). `as_mask`: as a mask layer covers (the layer's opacity does not
    count)."""
    data = read_strokes(layer, frame_number)
    if data is None:
        return None
    evaluated = ob.evaluated_get(depsgraph)
    line, fill = material_alphas(evaluated)
    line_rgb, fill_rgb = material_colors(evaluated)
    counts = np.diff(data.offsets)
    slot = np.clip(data.material, 0, len(line) - 1)
    line_alpha, fill_alpha = line[slot], fill[slot] * data.fill_opacity
    if STROKES_CHOOSE:
        line_alpha = np.where(data.hide_stroke, 0.0, line_alpha)
        fill_alpha = np.where(data.fill_id != 0, fill_alpha, 0.0)
    layer_opacity = 1.0 if as_mask else layer.opacity
    tint, tint_factor = np.array(layer.tint_color[:3], float), layer.tint_factor
    color = _mixed(line_rgb[np.repeat(slot, counts)], data.vertex_color[:, :3], data.vertex_color[:, 3])
    color = display_gray(_mixed(color, tint, tint_factor))
    fill_gray = _mixed(fill_rgb[slot], data.fill_color[:, :3], data.fill_color[:, 3])
    fill_gray = display_gray(_mixed(fill_gray, tint, tint_factor))
    fill_id = np.zeros(len(counts), int)
    if STROKES_CHOOSE:
        fill_alpha, fill_gray, fill_id = _fill_groups(data.fill_id, fill_alpha, fill_gray)
    opacity = data.opacity * np.repeat(line_alpha, counts) * layer_opacity
    drawn = counts > 0
    line_shown = np.zeros(len(counts), bool)
    line_shown[drawn] = np.maximum.reduceat(opacity, data.offsets[:-1][drawn]) > 0
    fill_opacity = np.where(counts >= 3, fill_alpha * layer_opacity, 0.0)
    keep = drawn & (line_shown | (fill_opacity > 0))
    points = np.repeat(keep, counts)
    matrix = layer_matrix(ob, layer, depsgraph)
    world = data.positions[points] @ matrix[:3, :3].T + matrix[:3, 3]
    scale = line_scale(evaluated.matrix_world)
    return _Gathered(
        world,
        data.radius[points] * scale,
        opacity[points],
        color[points],
        counts[keep],
        data.cyclic[keep],
        fill_opacity[keep],
        fill_gray[keep],
        fill_id[keep],
        np.full(int(keep.sum()), -1),
        np.full(int(keep.sum()), -1),
        data.flat_caps[keep],
    )


def _concatenate(parts: list[_Gathered]) -> _Gathered:
    """The parts' strokes one after the other; fill groups stay apart."""
    base = 0
    for part in parts:
        part.fill_id = np.where(part.fill_id > 0, part.fill_id + base, 0)
        base = max(base, int(part.fill_id.max(initial=0)))
    if not parts:
        empty, none, closed, flat = np.zeros(0), np.zeros(0, int), np.zeros(0, bool), np.zeros((0, 2), bool)
        return _Gathered(np.zeros((0, 3)), empty, empty, empty, none, closed, empty, empty, none, none, none, flat)
    return _Gathered(*[np.concatenate(column) for column in zip(*(vars(p).values() for p in parts), strict=True)])


@dataclass
class _Layers:
    """The layers' visible strokes and what the schema says of the layers:
    the mask layers (evaluated) the masks use, the masks (layers with the
    same masks share one) and the layers that blend other than Regular."""

    gathered: _Gathered
    mask_layers: list
    masks: list[list[dict]]
    blended: list[dict]


def _gather(ob, evaluated, layers: list, frame_number: int, depsgraph) -> _Layers:
    """The visible strokes of `layers` (evaluated), a masked layer's tagged
    with its mask, a blended layer's with its entry in "layers"."""
    parts, keys, blended = [], {}, []  # keys: mask entries -> mask index (dicts keep insertion order)
    for layer in layers:
        part = _read_layer(ob, layer, frame_number, depsgraph)
        if part is None:
            continue
        key = mask_entries(evaluated.layers, layer)
        if key:
            part.mask[:] = keys.setdefault(key, len(keys))
        if layer.blend_mode != "REGULAR":
            part.layer[:] = len(blended)
            blended.append({"blend": layer.blend_mode})
        parts.append(part)
    used = sorted({index for key in keys for index, _ in key})
    masks = [[{"layer": used.index(index), "invert": invert} for index, invert in key] for key in keys]
    return _Layers(_concatenate(parts), [evaluated.layers[index] for index in used], masks, blended)


def _anything_drawn(ob, frame_number: int) -> bool:
    """Whether any of the user's layers holds strokes at `frame_number`, shown or not."""
    for layer in ob.data.layers:
        frame = layer.get_frame_at(frame_number)
        if frame is not None and len(frame.drawing.strokes) and not layer.name.startswith(GENERATED_PREFIX):
            return True
    return False


def _closed_order(counts: np.ndarray, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Point indices with each closed stroke's first point repeated at its
    end, and the new stroke offsets (S + 1,)."""
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    closing = closed & (counts > 2)
    order = np.insert(np.arange(int(counts.sum())), (starts + counts)[closing], starts[closing])
    offsets = np.r_[0, np.cumsum(counts + closing)]
    return order, offsets


def screen_flip(ob) -> list[bool]:
    """[x, y]: whether the object's Flip shader effects (those shown in the
    viewport) mirror its drawing on screen, about the frame's centre; two
    flips of one axis cancel."""
    flip = [False, False]
    for effect in ob.shader_effects:
        if effect.type == "FX_FLIP" and effect.show_viewport:
            flip = [flip[0] != effect.use_flip_x, flip[1] != effect.use_flip_y]
    return flip


def mirrored(xy: np.ndarray, flip: list[bool]) -> np.ndarray:
    """(N, 2) square coordinates mirrored about the centre on the axes of `flip` ([x, y])."""
    return np.where(flip, 1.0 - xy, xy)


def _project(gathered: _Gathered, frame: Frame, flip: list[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 2) points in square units (mirrored as `flip` says), (N,) depth,
    (N,) radius in square units."""
    xy, depth = frame.to_square(gathered.world)
    origins, _ = frame.rays(np.array([[0.4, 0.5], [0.6, 0.5]]))
    right = (origins[1] - origins[0]) / np.linalg.norm(origins[1] - origins[0])  # world direction of the frame's x
    edge, _ = frame.to_square(gathered.world + right * gathered.radius[:, None])
    return mirrored(xy, flip), depth, np.abs(edge[:, 0] - xy[:, 0])


def _strokes(gathered: _Gathered, xy: np.ndarray, radius: np.ndarray) -> list[dict]:
    """The schema's strokes: points, radius, opacity (the mean of the
    points'), and where the stroke has one: "color" (the mean of the points'
    gray, when not black), "fill" with "fill_color", "fill_id", "mask", "layer",
    "start_cap" and "end_cap" ("flat"; round is the default) of an open stroke."""
    counts = gathered.counts
    if not len(counts):
        return []
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    opacity = (np.add.reduceat(gathered.opacity, starts) / counts).tolist()
    color = (np.add.reduceat(gathered.color, starts) / counts).round(6)
    order, offsets = _closed_order(counts, gathered.closed)
    points, radii = xy[order].round(6).tolist(), radius[order].round(6).tolist()
    bounds = offsets.tolist()
    strokes = [
        {"points": points[a:b], "radius": radii[a:b], "opacity": o}
        for a, b, o in zip(bounds[:-1], bounds[1:], opacity, strict=True)
    ]
    for index in np.flatnonzero(color > 0).tolist():
        strokes[index]["color"] = float(color[index])
    for index in np.flatnonzero(gathered.fill > 0).tolist():
        strokes[index]["fill"] = round(float(gathered.fill[index]), 6)
        strokes[index]["fill_color"] = round(float(gathered.fill_color[index]), 6)
    for index in np.flatnonzero(gathered.fill_id > 0).tolist():
        strokes[index]["fill_id"] = int(gathered.fill_id[index])
    for index in np.flatnonzero(gathered.mask >= 0).tolist():
        strokes[index]["mask"] = int(gathered.mask[index])
    for index in np.flatnonzero(gathered.layer >= 0).tolist():
        strokes[index]["layer"] = int(gathered.layer[index])
    for end, name in enumerate(("start_cap", "end_cap")):
        for index in np.flatnonzero(gathered.flat_caps[:, end] & ~gathered.closed).tolist():
            strokes[index][name] = "flat"
    return strokes


def export_drawing(
    ob, frame_number: int, frame: Frame, active_layer_only: bool = False, only_layer=None
) -> tuple[dict, Placement]:
    """What Blender draws of `ob` at `frame_number` (see the module docstring),
    projected through `frame`: the stroke schema (points and radius in square
    units, 0..1; opacity 0..1 per stroke; "masks" and "mask_layers" when a sent
    layer is masked, "layers" when one blends other than Regular) and the
    placement for the results.
    `active_layer_only` or `only_layer` (a layer of `ob`) send one layer, hidden
    or not (its masks applied). The scene is evaluated at `frame_number` and put back.
    Strokes the camera does not show are left out: wholly outside the frame,
    or wholly behind the camera or outside its clip range; where strokes cross
    the frame's edge, "frame" says what part of the square shows.
    Raises ExportError when `ob` is hidden in the viewport, nothing visible is
    drawn, the drawing is wholly outside the frame or the clip range, a
    stroke crosses the camera's clip range (Blender would cut it), or a stroke
    or mask layer lies behind the camera or more than REACH frame sizes
    outside the frame."""
    with scene_at(bpy.context.scene, frame_number):
        depsgraph = bpy.context.evaluated_depsgraph_get()
        if not ob.visible_get():
            raise ExportError(
                f"'{ob.name}' is hidden in the viewport at frame {frame_number} (its eye or monitor icon, or its "
                "collection's). Show it to animate it."
            )
        evaluated_object = ob.evaluated_get(depsgraph)
        object_matrix = np.array(evaluated_object.matrix_world).tolist()
        evaluated = evaluated_object.data
        layers = _layers_to_send(ob, evaluated, active_layer_only, only_layer)
        sent = _gather(ob, evaluated, layers, frame_number, depsgraph)
        covers = [(m.name, _read_layer(ob, m, frame_number, depsgraph, as_mask=True)) for m in sent.mask_layers]
    gathered = sent.gathered
    if not len(gathered.counts):
        if _anything_drawn(ob, frame_number):
            raise ExportError(
                f"Everything drawn on '{ob.name}' at frame {frame_number} is hidden (layers, layer groups, "
                "materials, zero opacity or modifiers). Show what should be animated."
            )
        raise ExportError(f"'{ob.name}' has nothing drawn at frame {frame_number}. Draw first, or go to a drawn frame.")
    flip = screen_flip(ob)
    gathered, xy, radius, shown = _in_view(gathered, frame, flip)
    drawing = {"schema": "flipsketch.strokes", "version": SCHEMA_VERSION, "strokes": _strokes(gathered, xy, radius)}
    if shown is not None:
        drawing["frame"] = shown
    if sent.masks:
        drawing["masks"] = sent.masks
        drawing["mask_layers"] = [_mask_layer(name, cover, frame, flip) for name, cover in covers]
    if sent.blended:
        drawing["layers"] = sent.blended
    placement = Placement(
        matrix=frame.matrix.tolist(),
        aspect=frame.aspect,
        point=gathered.world.mean(axis=0).tolist(),
        normal=frame.image_plane_normal().tolist(),
        flip=flip,
        object_matrix=object_matrix,
    )
    return drawing, placement


def _in_view(
    gathered: _Gathered, frame: Frame, flip: list[bool]
) -> tuple[_Gathered, np.ndarray, np.ndarray, list[float] | None]:
    """The strokes the camera shows, their points and radii in square units,
    and the frame's rectangle in the square [x0, y0, x1, y1] when some of
    them reach past it (else None). Raises ExportError as export_drawing says."""
    xy, _, radius = _project(gathered, frame, flip)
    starts = np.r_[0, np.cumsum(gathered.counts)[:-1]]
    seen = frame.in_clip_range(gathered.world)
    all_seen, any_seen = np.logical_and.reduceat(seen, starts), np.logical_or.reduceat(seen, starts)
    if (any_seen & ~all_seen).any():
        raise ExportError(
            "Part of the drawing lies behind the camera or outside its clip range (Clip Start to Clip End), so "
            "Blender cuts it there. Move the drawing, or change the camera's Clip Start and End."
        )
    if not any_seen.any():
        raise ExportError(
            "The drawing is behind the camera or outside its clip range (Clip Start to Clip End). "
            "Move the drawing, or change the camera's Clip Start and End."
        )
    fw, fh = frame.extent
    rect = np.array([0.5 - fw / 2, 0.5 - fh / 2, 0.5 + fw / 2, 0.5 + fh / 2])
    low = np.minimum.reduceat(xy - radius[:, None], starts)
    high = np.maximum.reduceat(xy + radius[:, None], starts)
    keep = any_seen & (high > rect[:2]).all(axis=1) & (low < rect[2:]).all(axis=1)
    if not keep.any():
        raise ExportError("The drawing is outside the camera frame. Frame it with the camera first.")
    points = np.repeat(keep, gathered.counts)
    xy, radius = xy[points], radius[points]
    if (np.abs(xy - 0.5) > 0.5 + REACH).any():
        raise ExportError(
            f"The drawing reaches more than {REACH:g} frame widths outside the camera frame. "
            "Keep its strokes nearer to the frame."
        )
    beyond = (low[keep] < rect[:2]).any() or (high[keep] > rect[2:]).any()
    return _select(gathered, keep), xy, radius, rect.round(6).tolist() if beyond else None


def _mask_layer(name: str, cover: _Gathered | None, frame: Frame, flip: list[bool]) -> dict:
    """A mask layer in the schema: its strokes (lines, and "fill" where its material fills)."""
    if cover is None:
        return {"strokes": []}
    xy, depth, radius = _project(cover, frame, flip)
    if (depth <= 0).any():
        raise ExportError(f"Part of the mask layer '{name}' is behind the camera. Move the camera or the layer.")
    if (np.abs(xy - 0.5) > 0.5 + REACH).any():
        raise ExportError(
            f"The mask layer '{name}' reaches more than {REACH:g} frame widths outside the camera frame. "
            "Keep its shapes nearer to the frame."
        )
    return {"strokes": _strokes(cover, xy, radius)}
