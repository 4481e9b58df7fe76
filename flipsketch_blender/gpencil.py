"""Grease Pencil v3 drawings as numpy arrays (Blender 4.5 and 5.0).

Bulk attribute access (`foreach_get/set`) is ~400x faster than per-point RNA.
Attributes such as `radius` and `opacity` exist only once written, and read
as 0 when absent, so writers always set them explicitly.
"""

from dataclasses import dataclass

import bpy
import numpy as np
import numpy.typing as npt

DEFAULT_RADIUS = 0.01  # what Blender uses when a drawing has no radius attribute


def gp_collection():
    """`grease_pencils_v3` in 4.5, `grease_pencils` in 5.0 (tested by name:
    an empty collection is falsy, so `or` would pick the legacy one)."""
    if hasattr(bpy.data, "grease_pencils_v3"):
        return bpy.data.grease_pencils_v3  # pyright: ignore[reportAttributeAccessIssue]  4.5's name; the stubs are 5.x
    return bpy.data.grease_pencils


def gp_data(ob: bpy.types.Object | None) -> bpy.types.GreasePencil:
    """The Grease Pencil data of `ob`; TypeError when `ob` is None or not a Grease Pencil object."""
    if ob is None or ob.type != "GREASEPENCIL":
        raise TypeError(f"{ob.name if ob else 'No object'} is not a Grease Pencil object.")
    return ob.data  # pyright: ignore[reportReturnType]  ob.type decides what data is


@dataclass
class Strokes:
    positions: np.ndarray  # (N, 3) layer-local
    offsets: np.ndarray  # (S + 1,) stroke starts, last = N
    radius: np.ndarray  # (N,)
    opacity: np.ndarray  # (N,)
    cyclic: np.ndarray  # (S,) bool: closed strokes (Box and Circle tools)
    material: np.ndarray  # (S,) material slot index
    fill_opacity: np.ndarray  # (S,) 0..1: how opaque the region a stroke encloses is, where its material fills
    hide_stroke: np.ndarray  # (S,) bool: Blender 5.1+: the stroke shows no line (a fill's outline)
    fill_id: np.ndarray  # (S,) Blender 5.1+: the fill the stroke bounds (0: none)
    vertex_color: np.ndarray  # (N, 4) linear RGB mixed over the material's line colour by A (vertex paint)
    fill_color: np.ndarray  # (S, 4) linear RGB mixed over the material's fill colour by A
    flat_caps: np.ndarray  # (S, 2) bool: the stroke's start and end are cut flat (else round)

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        return np.split(values, self.offsets[1:-1])


def _read_attribute(drawing, name: str, count: int, default: float, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    attribute = drawing.attributes.get(name)
    values = np.full(count, default, dtype)
    if attribute is not None:
        attribute.data.foreach_get("value", values)
    return values


def _read_colors(drawing, name: str, count: int) -> np.ndarray:
    """(count, 4) RGBA of a colour attribute, zeros (nothing mixed in) when absent."""
    attribute = drawing.attributes.get(name)
    values = np.zeros(count * 4, np.float32)
    if attribute is not None:
        attribute.data.foreach_get("color", values)
    return values.reshape(-1, 4)


def read_strokes(layer, frame_number: int) -> Strokes | None:
    """The strokes shown by `layer` at `frame_number` (the key at or before it),
    None when nothing is drawn. `layer` may belong to evaluated data (modifiers
    applied: read it at the depsgraph's frame)."""
    frame = layer.get_frame_at(frame_number)
    if frame is None:
        return None
    drawing = frame.drawing
    count = len(drawing.attributes["position"].data) if "position" in drawing.attributes else 0
    if count == 0:
        return None
    positions = np.empty(count * 3, np.float32)
    drawing.attributes["position"].data.foreach_get("vector", positions)
    offsets = np.empty(len(drawing.strokes) + 1, np.int32)
    drawing.curve_offsets.foreach_get("value", offsets)
    curves = len(offsets) - 1
    return Strokes(
        positions.reshape(-1, 3),
        offsets,
        _read_attribute(drawing, "radius", count, DEFAULT_RADIUS),
        _read_attribute(drawing, "opacity", count, 1.0),
        _read_attribute(drawing, "cyclic", curves, False, bool),
        _read_attribute(drawing, "material_index", curves, 0, np.int32),
        _read_attribute(drawing, "fill_opacity", curves, 1.0),
        _read_attribute(drawing, "hide_stroke", curves, False, bool),
        _read_attribute(drawing, "fill_id", curves, 0, np.int32),
        _read_colors(drawing, "vertex_color", count),
        _read_colors(drawing, "fill_color", curves),
        np.c_[
            _read_attribute(drawing, "start_cap", curves, 0, np.int8) != 0,
            _read_attribute(drawing, "end_cap", curves, 0, np.int8) != 0,
        ],
    )


def _ensure_attribute(drawing, name: str, kind: str, domain: str):
    attribute = drawing.attributes.get(name)
    return attribute if attribute is not None else drawing.attributes.new(name, kind, domain)


def write_strokes(
    layer,
    frame_number: int,
    strokes: list[np.ndarray],
    radii: list[np.ndarray],
    material: int = 0,
    cyclic: list[bool] | None = None,
):
    """A new keyframe on `layer` holding `strokes` ((n, 3) layer-local each);
    `cyclic`: which strokes are closed (default: none)."""
    drawing = layer.frames.new(frame_number).drawing
    closed = cyclic or [False] * len(strokes)
    closed = [c for s, c in zip(strokes, closed, strict=True) if len(s)]
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        return drawing
    drawing.add_strokes([len(s) for s in strokes])
    positions = np.concatenate(strokes).astype(np.float32)
    count = len(positions)
    drawing.attributes["position"].data.foreach_set("vector", positions.ravel())
    radius = np.concatenate(radii).astype(np.float32)
    _ensure_attribute(drawing, "radius", "FLOAT", "POINT").data.foreach_set("value", radius)
    _ensure_attribute(drawing, "opacity", "FLOAT", "POINT").data.foreach_set("value", np.ones(count, np.float32))
    materials = np.full(len(strokes), material, np.int32)
    _ensure_attribute(drawing, "material_index", "INT", "CURVE").data.foreach_set("value", materials)
    _ensure_attribute(drawing, "cyclic", "BOOLEAN", "CURVE").data.foreach_set("value", np.array(closed, bool))
    drawing.tag_positions_changed()
    return drawing
