"""Grease Pencil drawing -> stroke polylines in the square frame (schema v1).

The backend rasterises; Blender only projects. The placement (frame matrix
and the drawing's plane) travels with the job, so the results are put back
where the drawing was even if the camera moves while the job runs.
"""

from dataclasses import asdict, dataclass

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
    normal: list[float]  # the view direction

    def frame(self) -> Frame:
        return Frame(np.array(self.matrix), self.aspect)

    def to_json(self) -> dict:
        return asdict(self)


def _world_matrix(ob, layer) -> np.ndarray:
    return np.array(ob.matrix_world @ layer.matrix_local)


def export_drawing(
    ob, frame_number: int, frame: Frame, active_layer_only: bool = False, only_layer=None
) -> tuple[dict, Placement]:
    """The visible drawing of `ob` at `frame_number`, projected through `frame`
    (or only the active layer, or only `only_layer`)."""
    if only_layer is not None:
        layers = [only_layer]
    elif active_layer_only:
        layers = [ob.data.layers.active]
    else:  # the user's visible drawing: generated layers are results, not input
        layers = [layer for layer in ob.data.layers if not layer.hide and not layer.name.startswith(GENERATED_PREFIX)]
    right = None
    strokes, world_points = [], []
    for layer in layers:
        if layer is None:
            continue
        data = read_strokes(layer, frame_number)
        if data is None:
            continue
        matrix = _world_matrix(ob, layer)
        world = np.c_[data.positions, np.ones(len(data.positions))] @ matrix.T
        world = world[:, :3]
        scale = float(np.cbrt(abs(np.linalg.det(matrix[:3, :3])))) or 1.0
        if right is None:  # a world direction parallel to the frame's x axis
            origins, _ = frame.rays(np.array([[0.4, 0.5], [0.6, 0.5]]))
            right = (origins[1] - origins[0]) / np.linalg.norm(origins[1] - origins[0])
        xy, depth = frame.to_square(world)
        if (depth <= 0).any():
            raise ExportError("Part of the drawing is behind the camera. Move the camera or the drawing.")
        edge, _ = frame.to_square(world + right * (data.radius[:, None] * scale))
        radius = np.abs(edge[:, 0] - xy[:, 0])
        pieces = zip(data.split(xy), data.split(radius), data.split(data.opacity), data.cyclic, strict=True)
        for points, r, opacity, closed in pieces:
            strokes.append(
                {"points": points.round(6).tolist(), "radius": r.round(6).tolist(), "opacity": float(opacity.mean())}
                | ({"cyclic": True} if closed else {})
            )
        world_points.append(world)
    if not strokes:
        raise ExportError(f"'{ob.name}' has nothing drawn at frame {frame_number}. Draw first, or go to a drawn frame.")
    everything = np.concatenate(world_points)
    xy_all, _ = frame.to_square(everything)
    fw, fh = frame.extent
    inside = (np.abs(xy_all[:, 0] - 0.5) <= fw / 2) & (np.abs(xy_all[:, 1] - 0.5) <= fh / 2)
    if not inside.any():
        raise ExportError("The drawing is outside the camera frame. Frame it with the camera first.")
    placement = Placement(
        matrix=frame.matrix.tolist(),
        aspect=frame.aspect,
        point=everything.mean(axis=0).tolist(),
        normal=frame.view_direction().tolist(),
    )
    return {"schema": "flipsketch.strokes", "version": SCHEMA_VERSION, "strokes": strokes}, placement
