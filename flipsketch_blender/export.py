"""Grease Pencil drawing -> stroke polylines in the square frame (schema v1).

What goes out is what Blender draws through the camera at that frame: the
evaluated drawing (Grease Pencil modifiers applied, the layers' radius offset
included), each layer through its own transform (its parent object or bone
when it has one), without hidden layers (directly or through any hidden layer
group) and without strokes whose material is hidden or draws nothing. Closed
strokes (Box, Circle tools) go out closed; a fill-only stroke goes out as the
closed outline of the region it fills. Point opacity is multiplied by the
layer's opacity. Not applied: layer masks (a masked layer is sent whole) and
layer blend modes.

The backend rasterises; Blender only projects. The placement (frame matrix
and the drawing's plane) travels with the job, so the results are put back
where the drawing was even if the camera moves while the job runs.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import bpy
import numpy as np

from .gpencil import read_strokes
from .projection import Frame

SCHEMA_VERSION = 1
GENERATED_PREFIX = "FlipSketch: "  # layers the importer creates


class ExportError(Exception):
    """A drawing that cannot be sent; the message says what to do."""


@dataclass
class Placement:
    """Where results go back: the frame and the plane of the drawing."""

    matrix: list[list[float]]
    aspect: float
    point: list[float]  # a world point on the drawing plane (its centroid)
    normal: list[float]  # the plane's normal: the camera's viewing axis (parallel to the image plane)

    def frame(self) -> Frame:
        return Frame(np.array(self.matrix), self.aspect)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _Gathered:
    """The visible strokes of the layers, in world space, concatenated."""

    world: np.ndarray  # (N, 3)
    radius: np.ndarray  # (N,) world units
    opacity: np.ndarray  # (N,) point opacity x layer opacity
    counts: np.ndarray  # (S,) points per stroke
    closed: np.ndarray  # (S,) bool


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


def _material_styles(ob) -> tuple[np.ndarray, np.ndarray]:
    """Per material slot: (drawn at all, fill only). A slot without a Grease
    Pencil material draws with Blender's default stroke material."""
    drawn, fill_only = [], []
    for slot in ob.material_slots:
        style = slot.material.grease_pencil if slot.material is not None else None
        if style is None:
            drawn.append(True)
            fill_only.append(False)
            continue
        drawn.append(not style.hide and (style.show_stroke or style.show_fill))
        fill_only.append(not style.show_stroke and style.show_fill)
    return np.array(drawn, bool), np.array(fill_only, bool)


def _layers_to_send(ob, evaluated, active_layer_only: bool, only_layer) -> list:
    if only_layer is not None or active_layer_only:
        chosen = only_layer if only_layer is not None else ob.data.layers.active
        return [] if chosen is None else [evaluated.layers[chosen.name]]
    # the user's visible drawing: generated layers are results, not input
    return [layer for layer in evaluated.layers if not is_hidden(layer) and not layer.name.startswith(GENERATED_PREFIX)]


def _gather(ob, layers: list, frame_number: int, depsgraph) -> _Gathered:
    """The visible strokes of `layers` (evaluated)."""
    drawn, fill_only = _material_styles(ob)
    parts: list[tuple[np.ndarray, ...]] = []
    for layer in layers:
        data = read_strokes(layer, frame_number)
        if data is None:
            continue
        counts = np.diff(data.offsets)
        closed = data.cyclic.copy()
        keep = counts > 0
        if len(drawn):
            slot = np.clip(data.material, 0, len(drawn) - 1)
            keep &= drawn[slot]
            closed |= fill_only[slot]
        points = np.repeat(keep, counts)
        matrix = layer_matrix(ob, layer, depsgraph)
        world = data.positions[points] @ matrix[:3, :3].T + matrix[:3, 3]
        scale = float(np.cbrt(abs(np.linalg.det(matrix[:3, :3])))) or 1.0
        opacity = data.opacity[points] * layer.opacity
        parts.append((world, data.radius[points] * scale, opacity, counts[keep], closed[keep]))
    if not parts:
        empty = np.zeros(0)
        return _Gathered(np.zeros((0, 3)), empty, empty, np.zeros(0, int), np.zeros(0, bool))
    return _Gathered(*[np.concatenate(column) for column in zip(*parts, strict=True)])


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


def export_drawing(
    ob, frame_number: int, frame: Frame, active_layer_only: bool = False, only_layer=None
) -> tuple[dict, Placement]:
    """What Blender draws of `ob` at `frame_number` (see the module docstring),
    projected through `frame`: the stroke schema (points and radius in square
    units, 0..1; opacity 0..1 per stroke) and the placement for the results.
    `active_layer_only` or `only_layer` (a layer of `ob`) send one layer, hidden
    or not. The scene is evaluated at `frame_number` and put back.
    Raises ExportError when nothing visible is drawn, or it is behind the camera
    or outside the frame."""
    with scene_at(bpy.context.scene, frame_number):
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = ob.evaluated_get(depsgraph).data
        gathered = _gather(ob, _layers_to_send(ob, evaluated, active_layer_only, only_layer), frame_number, depsgraph)
    if not len(gathered.counts):
        if _anything_drawn(ob, frame_number):
            raise ExportError(
                f"Everything drawn on '{ob.name}' at frame {frame_number} is hidden (layers, layer groups or "
                "materials). Show what should be animated."
            )
        raise ExportError(f"'{ob.name}' has nothing drawn at frame {frame_number}. Draw first, or go to a drawn frame.")
    world = gathered.world
    xy, depth = frame.to_square(world)
    if (depth <= 0).any():
        raise ExportError("Part of the drawing is behind the camera. Move the camera or the drawing.")
    fw, fh = frame.extent
    if not ((np.abs(xy[:, 0] - 0.5) <= fw / 2) & (np.abs(xy[:, 1] - 0.5) <= fh / 2)).any():
        raise ExportError("The drawing is outside the camera frame. Frame it with the camera first.")
    origins, _ = frame.rays(np.array([[0.4, 0.5], [0.6, 0.5]]))
    right = (origins[1] - origins[0]) / np.linalg.norm(origins[1] - origins[0])  # world direction of the frame's x
    edge, _ = frame.to_square(world + right * gathered.radius[:, None])
    radius = np.abs(edge[:, 0] - xy[:, 0])
    counts = gathered.counts
    opacity = (np.add.reduceat(gathered.opacity, np.r_[0, np.cumsum(counts)[:-1]]) / counts).tolist()
    order, offsets = _closed_order(counts, gathered.closed)
    points, radii = xy[order].round(6).tolist(), radius[order].round(6).tolist()
    bounds = offsets.tolist()
    strokes = [
        {"points": points[a:b], "radius": radii[a:b], "opacity": o}
        for a, b, o in zip(bounds[:-1], bounds[1:], opacity, strict=True)
    ]
    placement = Placement(
        matrix=frame.matrix.tolist(),
        aspect=frame.aspect,
        point=world.mean(axis=0).tolist(),
        normal=frame.image_plane_normal().tolist(),
    )
    return {"schema": "flipsketch.strokes", "version": SCHEMA_VERSION, "strokes": strokes}, placement
