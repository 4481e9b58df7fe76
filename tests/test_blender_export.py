"""Export = what the camera shows, and import lands where the job saw it, in
the real bpy module: hidden layer groups and materials, closed strokes,
Grease Pencil modifiers, layer parents (object and bone), layer adjustments,
the ink material of imported strokes, the image card under lens shift, and
layer masks."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Vector
from PIL import Image

from flipsketch.sketch import rasterize_strokes

from .conftest import ROOT
from .test_blender import SQUARE, _reference_square, addon, scene  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module

BOX = {"strokes": [{"points": [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]], "radius": [0.01] * 4}]}
PX = 256  # tolerances in pixels of the 256 px square


def _export(ob, frame_number: int | None = None) -> tuple[list[dict], object]:
    scene = bpy.context.scene
    frame = addon_module("projection").camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    strokes, placement = addon_module("export").export_drawing(ob, frame_number or scene.frame_current, frame)
    return strokes["strokes"], placement


def _points(strokes: list[dict]) -> np.ndarray:
    return np.concatenate([np.asarray(s["points"]) for s in strokes])


def _layer(ob, name: str, drawing: dict):
    """A layer drawn like the 'Lines' layer: on the drawing's plane, through the camera."""
    return addon_module("importer").add_traced_layer(ob, name, {"frames": [drawing]}, 1, 1, _export(ob)[1])


def _set_curve_attribute(layer, name: str, kind: str, values: np.ndarray) -> None:
    drawing = layer.get_frame_at(1).drawing
    attribute = drawing.attributes.get(name) or drawing.attributes.new(name, kind, "CURVE")
    attribute.data.foreach_set("value", values)


def _material(ob, name: str, show_stroke: bool, show_fill: bool):
    """A new Grease Pencil material in `ob`'s next slot; its style."""
    material = bpy.data.materials.new(name)
    bpy.data.materials.create_gpencil_data(material)
    material.grease_pencil.show_stroke, material.grease_pencil.show_fill = show_stroke, show_fill
    ob.data.materials.append(material)
    return material.grease_pencil


def _paint(layer, slots: list[int]) -> None:
    """The strokes of `layer` (frame 1) drawn with the materials in `slots`,
    showing line and fill as those materials' Stroke and Fill switches say:
    from Blender 5.1 each stroke says so itself (hide_stroke, fill_id), as 5.1
    turns the switches of a file from an earlier Blender into."""
    _set_curve_attribute(layer, "material_index", "INT", np.array(slots, np.int32))
    if bpy.app.version >= (5, 1, 0):  # Blender's own boundary, independent of the add-on's STROKES_CHOOSE
        styles = [layer.id_data.materials[slot].grease_pencil for slot in slots]
        _set_curve_attribute(layer, "hide_stroke", "BOOLEAN", np.array([not style.show_stroke for style in styles]))
        fills = [k + 1 if style.show_fill else 0 for k, style in enumerate(styles)]
        _set_curve_attribute(layer, "fill_id", "INT", np.array(fills, np.int32))


def _shown_world(ob) -> np.ndarray:
    """What Blender shows of `ob`, independently of the add-on: Blender's own
    conversion of it to a mesh (modifiers, layer parents applied), in world space."""
    for other in bpy.context.view_layer.objects:
        other.select_set(other == ob)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.object.convert(target="MESH", keep_original=True) == {"FINISHED"}
    mesh = bpy.context.active_object
    assert mesh != ob
    local = np.array([v.co for v in mesh.data.vertices])
    world = local @ np.array(mesh.matrix_world)[:3, :3].T + np.array(mesh.matrix_world)[:3, 3]
    bpy.data.objects.remove(mesh)
    bpy.context.view_layer.objects.active = ob
    return world


def _assert_same_points(sent: np.ndarray, expected: np.ndarray, tolerance_px: float = 0.01) -> None:
    distances = np.linalg.norm(sent[:, None] - expected[None], axis=2)
    assert distances.min(axis=1).max() * PX < tolerance_px  # every sent point is shown
    assert distances.min(axis=0).max() * PX < tolerance_px  # every shown point is sent


def test_hidden_layers_and_layer_groups_at_any_depth_are_not_sent(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    rough = _layer(ob, "Rough", BOX)
    outer = ob.data.layer_groups.new("Outer")
    inner = ob.data.layer_groups.new("Inner", parent_group=outer)
    ob.data.layers.move_to_layer_group(rough, inner)
    assert len(_export(ob)[0]) == 3
    for hidden in (outer, inner, rough):
        hidden.hide = True
        assert len(_export(ob)[0]) == 2, hidden.name
        hidden.hide = False
    ob.data.layers["Lines"].hide = rough.hide = True
    with pytest.raises(addon_module("export").ExportError, match="is hidden"):
        _export(ob)
    with pytest.raises(RuntimeError, match="is hidden"):  # the operator's error report, headless
        bpy.ops.flipsketch.animate()
    assert len(scene.flipsketch.jobs) == 0 and len(ob.data.layers) == 2  # no job, nothing changed


def test_strokes_of_hidden_or_empty_materials_are_not_sent_and_fill_only_goes_out_as_a_fill(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    line = {"points": [[0.2, 0.7], [0.8, 0.7]], "radius": [0.01, 0.01]}  # inside the 16:9 frame (y 0.22..0.78)
    layer = _layer(ob, "Shapes", {"strokes": [*SQUARE["strokes"], line, BOX["strokes"][0]]})
    ob.data.layers["Lines"].hide = True
    _material(ob, "Ink", show_stroke=True, show_fill=False)
    _material(ob, "Guides", show_stroke=True, show_fill=False).hide = True
    _material(ob, "Nothing", show_stroke=False, show_fill=False)
    _material(ob, "Fill", show_stroke=False, show_fill=True)
    _paint(layer, [0, 1, 2, 3])
    sent = _export(ob)[0]
    assert len(sent) == 2  # the ink stroke and the filled box
    assert np.allclose(sent[0]["points"], SQUARE["strokes"][0]["points"], atol=1e-4)
    box = sent[1]
    assert np.allclose(box["points"], BOX["strokes"][0]["points"], atol=1e-4)
    assert box["opacity"] == 0.0 and box["fill"] == 1.0 and box["fill_color"] == 0.0  # a black region, no line


def test_the_alpha_of_a_materials_colour_reaches_the_strokes_and_a_clear_one_sends_nothing(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    line = {"points": [[0.2, 0.7], [0.8, 0.7]], "radius": [0.01, 0.01]}  # inside the 16:9 frame (y 0.22..0.78)
    layer = _layer(ob, "Shapes", {"strokes": [*SQUARE["strokes"], line, BOX["strokes"][0]]})
    ob.data.layers["Lines"].hide = True
    layer.opacity = 0.5
    _material(ob, "Faint ink", show_stroke=True, show_fill=False).color[3] = 0.25
    _material(ob, "Clear ink", show_stroke=True, show_fill=False).color[3] = 0.0  # drawn, but nothing shows
    _material(ob, "Ink over a clear fill", show_stroke=True, show_fill=True).fill_color[3] = 0.0  # the line shows
    _material(ob, "Tinted fill", show_stroke=False, show_fill=True).fill_color[3] = 0.6
    _paint(layer, [0, 1, 2, 3])
    sent = _export(ob)[0]
    assert [round(s["opacity"], 6) for s in sent] == [0.125, 0.5, 0.0]  # colour alpha x layer opacity 0.5
    assert [s.get("fill") for s in sent] == [None, None, 0.3]  # the fill's alpha x layer opacity; a clear one: none
    assert np.allclose(sent[0]["points"], SQUARE["strokes"][0]["points"], atol=1e-4)
    assert np.allclose(sent[1]["points"], line["points"], atol=1e-4)


def test_from_blender_5_1_each_stroke_says_whether_it_shows_its_line_and_fill(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    material = bpy.data.materials.new("Ink and paint")  # its Stroke and Fill switches as this Blender makes them
    bpy.data.materials.create_gpencil_data(material)
    material.grease_pencil.fill_color[3] = 0.6
    ob.data.materials.append(material)
    layer = _layer(ob, "Shapes", BOX)
    _set_curve_attribute(layer, "material_index", "INT", np.array([0], np.int32))
    _set_curve_attribute(layer, "hide_stroke", "BOOLEAN", np.array([True]))  # the box: a fill without a line
    _set_curve_attribute(layer, "fill_id", "INT", np.array([1], np.int32))
    sent = _export(ob)[0]
    if bpy.app.version >= (5, 1, 0):  # the plus's lines and the box's fill
        assert [len(s["points"]) for s in sent] == [2, 2, 4]
        assert [round(s["opacity"], 6) for s in sent] == [1.0, 1.0, 0.0] and sent[2]["fill"] == 0.6
    else:  # the material's switches decide (lines on, fill off): the box is a line
        assert [len(s["points"]) for s in sent] == [2, 2, 4] and [s["opacity"] for s in sent] == [1.0, 1.0, 1.0]


def test_cyclic_strokes_go_out_closed(scene) -> None:
    add_camera()
    ob = add_drawing(BOX)
    _set_curve_attribute(ob.data.layers["Lines"], "cyclic", "BOOLEAN", np.array([True]))
    (box,) = _export(ob)[0]
    assert np.allclose(box["points"], [*BOX["strokes"][0]["points"], BOX["strokes"][0]["points"][0]], atol=1e-4)
    assert len(box["radius"]) == 5


def _modifier(ob, kind: str, **settings):
    """A Grease Pencil modifier of `kind` (GREASE_PENCIL_<kind>) on `ob` with `settings`."""
    modifier = ob.modifiers.new(kind.title(), f"GREASE_PENCIL_{kind}")
    for name, value in settings.items():
        setattr(modifier, name, value)
    return modifier


def _lattice(ob) -> None:
    lattice = bpy.data.objects.new("Lattice", bpy.data.lattices.new("Lattice"))
    bpy.context.scene.collection.objects.link(lattice)
    lattice.scale = (3.0, 3.0, 3.0)
    for point in lattice.data.points:  # stretch the right half
        if point.co[0] > 0:
            point.co_deform.x += 0.5
    _modifier(ob, "LATTICE", object=lattice)


def _hook(ob) -> None:
    target = bpy.data.objects.new("Hook", None)
    bpy.context.scene.collection.objects.link(target)
    _modifier(ob, "HOOK", object=target)
    bpy.context.view_layer.update()
    target.location = (0.5, 0.0, 0.3)  # moved after hooking: pulls the points


def _armature_deform(ob) -> None:
    """The posed rig of `_armature` deforms `ob` through automatic weights."""
    rig = _armature(head=(0.0, 0.0, -2.0), tail=(0.0, 0.0, 2.0))
    rig.location = (0.0, 0.0, 0.0)  # the bone through the drawing
    for other in bpy.context.view_layer.objects:
        other.select_set(other in (ob, rig))
    bpy.context.view_layer.objects.active = rig
    assert bpy.ops.object.parent_set(type="ARMATURE_AUTO") == {"FINISHED"}
    assert [m.type for m in ob.modifiers] == ["GREASE_PENCIL_ARMATURE"]
    rig.pose.bones["Bone"].rotation_euler = (0.0, 0.4, 0.0)  # posed after the weights are made
    bpy.context.view_layer.objects.active = ob


def _build_halfway(ob) -> None:
    _modifier(ob, "BUILD", length=20)  # strokes grow one after another over 20 frames from the key at 1
    bpy.context.scene.frame_set(10)


def _time_offset(ob) -> None:
    """Keys at frames 1 (the drawing) and 5 (one stroke); 4 frames ahead, frame 1 shows frame 5's."""
    layer, gpencil = ob.data.layers["Lines"], addon_module("gpencil")
    drawn = gpencil.read_strokes(layer, 1)
    gpencil.write_strokes(layer, 5, [drawn.positions[:2] + np.float32([0.5, 0.0, 0.3])], [drawn.radius[:2]])
    _modifier(ob, "TIME", offset=4)


def _geometry_nodes(ob, node: str, **inputs):
    """A Geometry Nodes modifier on `ob`: the geometry through one `node` with `inputs`."""
    tree = bpy.data.node_groups.new(node, "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    given, result, step = tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput"), tree.nodes.new(node)
    for name, value in inputs.items():
        step.inputs[name].default_value = value
    tree.links.new(given.outputs[0], step.inputs["Geometry"])
    tree.links.new(step.outputs["Geometry"], result.inputs[0])
    ob.modifiers.new(node, "NODES").node_group = tree


MODIFIERS = {  # name: (how it is set up, the strokes Blender then draws of the 4 drawn)
    "mirror": (lambda ob: _modifier(ob, "MIRROR"), 8),
    "offset": (lambda ob: _modifier(ob, "OFFSET", location=(2.0, 0.0, 0.5), rotation=(0.0, 0.3, 0.0)), 4),
    "subdivide": (lambda ob: _modifier(ob, "SUBDIV", level=2), 4),
    "array": (lambda ob: _modifier(ob, "ARRAY", count=3, relative_offset=(0.1, 0.1, 0.0)), 12),  # in the frame
    "multiple strokes": (lambda ob: _modifier(ob, "MULTIPLY", duplicates=2, distance=0.3), 8),
    "simplify": (lambda ob: _modifier(ob, "SIMPLIFY", mode="SAMPLE", length=0.3), 4),
    "noise": (lambda ob: _modifier(ob, "NOISE", factor=2.0), 4),
    "smooth": (lambda ob: _modifier(ob, "SMOOTH", factor=1.0, step=3), 4),
    "length": (lambda ob: _modifier(ob, "LENGTH", start_factor=0.3, end_factor=-0.2), 4),
    "dash": (lambda ob: _modifier(ob, "DASH"), 5),
    "envelope": (lambda ob: _modifier(ob, "ENVELOPE", spread=3), 23),
    "outline": (lambda ob: _modifier(ob, "OUTLINE", thickness=5), 4),
    "lattice": (_lattice, 4),
    "hook": (_hook, 4),
    "armature": (_armature_deform, 4),
    "build, halfway": (_build_halfway, 2),
    "time offset": (_time_offset, 1),
    "geometry nodes": (lambda ob: _geometry_nodes(ob, "GeometryNodeSetPosition", Offset=(1.0, 0.0, 0.5)), 4),
}


@pytest.mark.parametrize("modifier", MODIFIERS)
def test_grease_pencil_modifiers_are_applied(scene, modifier: str) -> None:
    add_camera()
    aside = {"points": [[0.15, 0.25], [0.3, 0.3], [0.35, 0.4]], "radius": [0.01] * 3}  # not symmetric, in the frame
    ob = add_drawing({"strokes": [*SQUARE["strokes"], aside, BOX["strokes"][0]]})
    plain = _points(_export(ob)[0])
    setup, count = MODIFIERS[modifier]
    setup(ob)
    bpy.context.view_layer.update()
    strokes = _export(ob)[0]
    sent = _points(strokes)
    assert len(strokes) == count
    _assert_same_points(sent, _reference_square(_shown_world(ob), scene))
    assert sent.shape != plain.shape or np.abs(sent - plain).max() * PX > 1  # the modifier changed what is sent


def test_thickness_modifier_layer_radius_offset_and_opacity_reach_the_strokes(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    layer = ob.data.layers["Lines"]
    (before, _), _ = _export(ob)
    assert before["radius"][0] == pytest.approx(0.01, rel=1e-3) and before["opacity"] == 1.0
    thickness = ob.modifiers.new("Thickness", "GREASE_PENCIL_THICKNESS")
    thickness.thickness_factor = 3.0
    bpy.context.view_layer.update()
    assert _export(ob)[0][0]["radius"][0] == pytest.approx(0.03, rel=1e-3)
    ob.modifiers.remove(thickness)
    # 0.01 of the square: it is 7.2 units wide at the drawing (50 mm lens, 36 mm sensor, 10 units away)
    layer.radius_offset, layer.opacity = 0.072, 0.1
    bpy.context.view_layer.update()
    (after, _), _ = _export(ob)
    assert after["radius"][0] == pytest.approx(0.02, rel=1e-3)
    assert after["opacity"] == pytest.approx(0.1)


def _opacity(**settings):
    return lambda ob: _modifier(ob, "OPACITY", **settings)


SHADING = {  # name: (its set-up, the opacity of what each stroke sent draws: the plus's two lines, the box's fill)
    "nothing": (lambda ob: None, [1.0, 1.0, 0.8]),
    "opacity, lines and fills": (_opacity(color_factor=0.3), [0.3, 0.3, 0.24]),
    "opacity, fills only": (_opacity(color_mode="FILL", color_factor=0.5), [1.0, 1.0, 0.4]),
    "opacity, lines only": (_opacity(color_mode="STROKE", color_factor=0.5), [0.5, 0.5, 0.8]),
    "opacity, uniform": (_opacity(use_uniform_opacity=True, color_factor=0.4), [0.4, 0.4, 0.32]),
    "opacity 0 on one layer": (_opacity(color_factor=0.0, tree_node_filter="Lines"), [0.8]),
    "opacity 0 on one material": (
        lambda ob: _modifier(ob, "OPACITY", color_factor=0.0, material_filter=ob.material_slots[0].material),
        [0.8],
    ),
    "layer at opacity 0": (lambda ob: setattr(ob.data.layers["Lines"], "opacity", 0.0), [0.8]),
    "tint": (lambda ob: _modifier(ob, "TINT", factor=1.0, color=(1.0, 0.0, 0.0)), [1.0, 1.0, 0.8]),
    "hue/saturation": (lambda ob: _modifier(ob, "COLOR", hue=0.3), [1.0, 1.0, 0.8]),
    "texture mapping": (lambda ob: _modifier(ob, "TEXTURE", uv_offset=0.3), [1.0, 1.0, 0.8]),
}


@pytest.mark.parametrize("shading", SHADING)
def test_modifiers_that_shade_reach_the_opacity_and_leave_the_points_alone(scene, shading: str) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    _material(ob, "Ink", show_stroke=True, show_fill=False)
    _material(ob, "Fill", show_stroke=False, show_fill=True)
    ob.material_slots[1].material.grease_pencil.fill_color[3] = 0.8
    _paint(_layer(ob, "Shapes", BOX), [1])
    plain = _export(ob)[0]
    setup, opacity = SHADING[shading]
    setup(ob)
    bpy.context.view_layer.update()
    sent = _export(ob)[0]
    assert [round(s.get("fill", s["opacity"]), 6) for s in sent] == opacity
    kept = plain[-len(sent) :] if len(sent) < len(plain) else plain  # a stroke left out is one of the plus's
    for stroke, before in zip(sent, kept, strict=True):
        assert stroke["points"] == before["points"] and stroke["radius"] == before["radius"]


def test_materials_that_geometry_nodes_give_are_the_ones_drawn(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    _material(ob, "Ink", show_stroke=True, show_fill=False)
    assert [s["opacity"] for s in _export(ob)[0]] == [1.0, 1.0]
    faint = bpy.data.materials.new("Faint ink")  # not on the object: Geometry Nodes add it
    bpy.data.materials.create_gpencil_data(faint)
    faint.grease_pencil.show_stroke, faint.grease_pencil.color[3] = True, 0.25
    _geometry_nodes(ob, "GeometryNodeSetMaterial", Material=faint)
    bpy.context.view_layer.update()
    assert [s["opacity"] for s in _export(ob)[0]] == [0.25, 0.25]  # drawn in the faint ink


def _armature(bone_name: str = "Bone", head=(0.0, 0.0, 0.0), tail=(0.0, 0.0, 1.0)):
    armature = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    bpy.context.scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    bone = armature.data.edit_bones.new(bone_name)
    bone.head, bone.tail = head, tail
    bpy.ops.object.mode_set(mode="OBJECT")
    armature.location = (0.5, 1.0, -0.3)
    pose = armature.pose.bones[bone_name]
    pose.location, pose.rotation_mode, pose.rotation_euler = (0.2, 0.1, 0.4), "XYZ", (0.0, 0.3, 0.2)
    return armature


@pytest.mark.parametrize("parent", ["object", "bone"])
def test_a_layer_parented_to_an_object_or_bone_is_sent_where_blender_draws_it(scene, parent: str) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    ob.location = (0.4, 0.0, 0.2)  # a parented layer ignores its object's transform: Blender's reference says so
    layer = ob.data.layers["Lines"]
    if parent == "object":
        target = bpy.data.objects.new("Target", None)
        bpy.context.scene.collection.objects.link(target)
        target.location, target.rotation_euler = (0.9, 0.5, -0.6), (0.0, 0.25, 0.0)
        layer.parent = target
    else:
        layer.parent = _armature()
        layer.parent_bone = "Bone"
    bpy.context.view_layer.objects.active = ob
    bpy.context.view_layer.update()
    sent = _points(_export(ob)[0])
    expected = _reference_square(_shown_world(ob), scene)
    _assert_same_points(sent, expected)
    assert np.abs(sent - _points(SQUARE["strokes"])).max() * PX > 5  # the parent moved it


def test_another_frame_is_exported_as_evaluated_there_and_the_playhead_stays(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE, frame=5)
    offset = ob.modifiers.new("Offset", "GREASE_PENCIL_OFFSET")
    offset.keyframe_insert("location", frame=1)
    offset.location = (1.5, 0.0, 0.0)
    offset.keyframe_insert("location", frame=10)
    scene.frame_set(10)
    expected = _reference_square(_shown_world(ob), scene)
    scene.frame_set(3)
    sent = _points(_export(ob, 10)[0])
    assert scene.frame_current == 3
    _assert_same_points(sent, expected)
    with pytest.raises(addon_module("export").ExportError, match="nothing drawn at frame 2"):
        _export(ob, 2)
    assert scene.frame_current == 3  # put back on failure too


def test_imported_strokes_use_a_material_that_draws_strokes(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    assert len(ob.material_slots) == 0  # no materials: Blender's default draws the strokes, nothing is added
    placement, importer, export = _export(ob)[1], addon_module("importer"), addon_module("export")

    def material_of_new_strokes() -> str:
        layer = importer.add_traced_layer(ob, "Generated", {"frames": [SQUARE]}, 1, 1, placement)
        values = np.empty(2, np.int32)
        layer.get_frame_at(1).drawing.attributes["material_index"].data.foreach_get("value", values)
        assert values[0] == values[1]
        return ob.material_slots[int(values[0])].material.name if ob.material_slots else ""

    assert material_of_new_strokes() == ""
    for name, hide, alpha in (("Hidden", True, 1.0), ("Clear", False, 0.0)):
        material = bpy.data.materials.new(name)
        bpy.data.materials.create_gpencil_data(material)
        material.grease_pencil.hide, material.grease_pencil.color[3] = hide, alpha
        ob.data.materials.append(material)
    assert material_of_new_strokes() == "FlipSketch Ink"
    assert [slot.material.name for slot in ob.material_slots] == ["Hidden", "Clear", "FlipSketch Ink"]
    assert material_of_new_strokes() == "FlipSketch Ink"  # found again, not added twice
    assert len(ob.material_slots) == 3
    ink = bpy.data.materials["FlipSketch Ink"].grease_pencil
    assert not ink.hide and ink.color[3] == 1.0 and (export.STROKES_CHOOSE or ink.show_stroke)

    # A fill-only material: before Blender 5.1 it draws no line; from 5.1 the stroke decides, so it serves.
    fill = bpy.data.materials.new("Fill")
    bpy.data.materials.create_gpencil_data(fill)
    fill.grease_pencil.show_stroke, fill.grease_pencil.show_fill = False, True
    ob.data.materials.clear()
    ob.data.materials.append(fill)
    assert material_of_new_strokes() == ("Fill" if export.STROKES_CHOOSE else "FlipSketch Ink")


@pytest.mark.parametrize(
    ("lens", "shift", "ortho", "resolution"),
    [
        (20.0, (0.5, 0.3), False, (1280, 720)),
        (50.0, (-0.2, 0.4), False, (720, 1280)),
        (50.0, (0.3, -0.25), True, (1920, 1080)),
    ],
)
def test_image_card_covers_the_frame_the_camera_had_at_job_time(scene, tmp_path: Path, lens, shift, ortho, resolution):
    scene.render.resolution_x, scene.render.resolution_y = resolution
    camera = add_camera(location=(0.3, -10.0, 0.2), rotation=(np.pi / 2 + 0.1, 0.05, 0.2), ortho=ortho)
    camera.data.lens, (camera.data.shift_x, camera.data.shift_y) = lens, shift
    bpy.context.view_layer.update()
    ob = add_drawing(SQUARE)
    placement = _export(ob)[1]
    pose = camera.matrix_world.copy()
    camera.location.x += 3.0  # the artist scrubs an animated camera while the job runs
    camera.rotation_euler.z += 0.3
    bpy.context.view_layer.update()
    Image.new("L", (256, 256), 255).save(tmp_path / "seq_0001.png")
    card = addon_module("importer").add_image_sequence("Card", tmp_path / "seq_0001.png", 1, 1, placement, scene)
    half = card.empty_display_size / 2
    corners = [(-half, half, 0.0), (half, half, 0.0), (half, -half, 0.0), (-half, -half, 0.0)]  # image TL, TR, BR, BL
    world = np.array([card.matrix_world @ Vector(c) for c in corners])
    camera.matrix_world = pose
    bpy.context.view_layer.update()
    got = _reference_square(world, scene)  # through Blender's own projection, the camera back at job time
    assert np.abs(got - [[0, 0], [1, 0], [1, 1], [0, 1]]).max() * PX < 0.05
    assert np.allclose(np.array(card.matrix_world.to_scale()), 1.0, atol=1e-6)


LINE = {"strokes": [{"points": [[0.1, 0.5], [0.9, 0.5]], "radius": [0.01, 0.01]}]}  # along row 32 of 64
ROW = 32  # the line's row in a 64 px drawing


def _box(x0: float, x1: float) -> dict:
    """A box around the line from x0 to x1 (square units), drawn with a fill-only material."""
    return {"strokes": [{"points": [[x0, 0.4], [x1, 0.4], [x1, 0.6], [x0, 0.6]], "radius": [0.01] * 4}]}


def _matte(ob, name: str, x0: float, x1: float, opacity: float = 0.0):
    """A layer of one filled box (no line): what masks are drawn with. At
    opacity 0, as artists keep a mask layer: it masks but does not show."""
    layer = _layer(ob, name, _box(x0, x1))
    layer.opacity = opacity
    if not ob.material_slots:  # slot 0 keeps drawing lines: the other layers' strokes use it
        _material(ob, "Ink", show_stroke=True, show_fill=False)
    slot = ob.material_slots.find("Matte")
    if slot < 0:
        _material(ob, "Matte", show_stroke=False, show_fill=True)
        slot = len(ob.material_slots) - 1
    _paint(layer, [slot])
    return layer


def _add_mask(ob, layer, mask_layer, invert: bool = False):
    """`mask_layer` masks `layer` (through Blender's operator: 4.5 has no
    mask_layers.add); Use Masks switched on."""
    ob.data.layers.active = layer
    assert bpy.ops.grease_pencil.layer_mask_add(name=mask_layer.name) == {"FINISHED"}
    entry = layer.mask_layers[mask_layer.name]
    entry.invert, layer.use_masks = invert, True
    return entry


def _drawing(ob) -> dict:
    scene = bpy.context.scene
    frame = addon_module("projection").camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    return addon_module("export").export_drawing(ob, scene.frame_current, frame)[0]


def _line_ink(ob) -> np.ndarray:
    """Ink (255 - gray) along the line's row of the rasterised drawing, 64 px, per column."""
    return 255 - np.asarray(rasterize_strokes(_drawing(ob), 64, 64)).astype(int)[ROW]


def _columns(x0: float, x1: float) -> slice:
    """The columns of a 64 px drawing well inside x0..x1 (clear of box outlines)."""
    return slice(round(x0 * 64) + 2, round(x1 * 64) - 2)


def test_a_masked_layer_shows_only_inside_its_filled_mask_or_outside_an_inverted_one(scene) -> None:
    add_camera()
    ob = add_drawing(LINE)
    lines = ob.data.layers["Lines"]
    plain = _line_ink(ob)
    assert (plain[_columns(0.1, 0.9)] > 150).all()
    matte = _matte(ob, "Matte", 0.4, 0.6)
    entry = _add_mask(ob, lines, matte)
    drawing = _drawing(ob)
    assert drawing["masks"] == [[{"layer": 0, "invert": False}]]
    (box,) = drawing["mask_layers"][0]["strokes"]
    assert box["fill"] == 1.0 and box["opacity"] == 0.0  # a fill-only material: the region covers, no line
    assert [stroke.get("mask") for stroke in drawing["strokes"]] == [0]  # the line masked; the matte not sent
    masked = _line_ink(ob)
    inside, left, right = _columns(0.4, 0.6), _columns(0.0, 0.4), _columns(0.6, 1.0)
    assert np.array_equal(masked[inside], plain[inside])  # all of the line inside the box
    assert (masked[left] == 0).all() and (masked[right] == 0).all()  # nothing of it outside
    entry.invert = True
    inverted = _line_ink(ob)
    assert (inverted[inside] == 0).all()
    assert np.array_equal(inverted[left], plain[left]) and np.array_equal(inverted[right], plain[right])
    lines.opacity = 0.5  # the masked layer's opacity weakens it
    entry.invert = False
    faint = _line_ink(ob)
    assert np.array_equal(faint[inside], np.ceil(plain[inside] * 0.5)) and (faint[left] == 0).all()
    matte.opacity = 0.1  # the mask layer now shows a faint box over the line, and its mask is not weakened
    assert (_line_ink(ob)[inside] > faint[inside]).all()  # weakened to 10 %, the line would nearly vanish


def test_masks_unite_and_fold_in_layer_order_not_list_order(scene) -> None:
    add_camera()
    ob = add_drawing(LINE)
    lines = ob.data.layers["Lines"]
    plain = _line_ink(ob)
    left, right = _matte(ob, "Left", 0.15, 0.4), _matte(ob, "Right", 0.6, 0.85)
    _add_mask(ob, lines, right)
    _add_mask(ob, lines, left)
    ink = _line_ink(ob)
    for shown in (_columns(0.15, 0.4), _columns(0.6, 0.85)):
        assert np.array_equal(ink[shown], plain[shown])
    for cut in (_columns(0.0, 0.15), _columns(0.4, 0.6), _columns(0.85, 1.0)):
        assert (ink[cut] == 0).all()
    assert _drawing(ob)["masks"] == [[{"layer": 0, "invert": False}, {"layer": 1, "invert": False}]]  # Left first

    ob2 = add_drawing(LINE, name="Holed")
    lines = ob2.data.layers["Lines"]
    wide, hole = _matte(ob2, "Wide", 0.2, 0.8), _matte(ob2, "Hole", 0.4, 0.6)
    _add_mask(ob2, lines, hole, invert=True)  # listed first, but folded after Wide (above it in the layers)
    _add_mask(ob2, lines, wide)
    ink = _line_ink(ob2)
    for shown in (_columns(0.2, 0.4), _columns(0.6, 0.8)):
        assert np.array_equal(ink[shown], plain[shown])
    for cut in (_columns(0.0, 0.2), _columns(0.4, 0.6), _columns(0.8, 1.0)):
        assert (ink[cut] == 0).all()
    ob2.data.layers.move(hole, "DOWN")  # Hole below Wide: inverted first (all but the hole), then Wide added
    ink = _line_ink(ob2)
    for shown in (_columns(0.1, 0.2), _columns(0.2, 0.4), _columns(0.4, 0.6), _columns(0.6, 0.8)):
        assert np.array_equal(ink[shown], plain[shown])  # the whole line


def test_hidden_or_switched_off_masks_are_ignored(scene) -> None:
    add_camera()
    ob = add_drawing(LINE)
    lines = ob.data.layers["Lines"]
    plain = _line_ink(ob)
    matte = _matte(ob, "Matte", 0.4, 0.6, opacity=1.0)  # it shows, as a black box
    entry = _add_mask(ob, lines, matte)
    outside = _columns(0.0, 0.4)
    assert (_line_ink(ob)[outside] == 0).all()  # masked

    def unmasked() -> bool:
        drawing = _drawing(ob)
        ink = 255 - np.asarray(rasterize_strokes(drawing, 64, 64)).astype(int)[ROW]
        return "masks" not in drawing and np.array_equal(ink[outside], plain[outside])

    entry.hide = True  # the mask entry hidden
    assert unmasked()
    entry.hide = False
    lines.use_masks = False
    assert unmasked()
    lines.use_masks = True
    group = ob.data.layer_groups.new("Group")
    ob.data.layers.move_to_layer_group(lines, group)
    group.use_masks = False  # a group's Use Masks switches its layers' masks off
    assert unmasked()
    group.use_masks = True
    assert not unmasked()
    matte.hide = True  # a hidden mask layer does not mask (nor is it sent)
    assert unmasked()
    matte.hide = False
    matte_group = ob.data.layer_groups.new("Mattes")
    ob.data.layers.move_to_layer_group(matte, matte_group)
    matte_group.hide = True  # hidden through its group
    assert unmasked()
    matte_group.hide = False
    assert not unmasked()
    group.hide = True  # the masked layer itself hidden through its group: not sent, nor its masks
    drawing = _drawing(ob)
    assert "masks" not in drawing and len(drawing["strokes"]) == 1  # the matte's box only
    group.hide = False
    ob.data.materials["Matte"].grease_pencil.hide = True  # the mask layer draws nothing: the layer shows nowhere
    drawing = _drawing(ob)
    assert drawing["mask_layers"] == [{"strokes": []}] and drawing["strokes"][0]["mask"] == 0


def test_a_mask_layer_covers_where_blender_draws_it(scene) -> None:
    """Through its own transform and the modifiers, like any layer."""
    add_camera()
    ob = add_drawing(LINE)
    plain = _line_ink(ob)
    matte = _matte(ob, "Matte", 0.4, 0.6)
    _add_mask(ob, ob.data.layers["Lines"], matte)
    matte.translation.x += 0.72  # a tenth of the frame: it is 7.2 units wide at the drawing
    bpy.context.view_layer.update()
    (box,) = _drawing(ob)["mask_layers"][0]["strokes"]
    assert np.allclose(np.asarray(box["points"]), np.asarray(_box(0.5, 0.7)["strokes"][0]["points"]), atol=1e-4)
    ink = _line_ink(ob)
    assert np.array_equal(ink[_columns(0.5, 0.7)], plain[_columns(0.5, 0.7)])
    assert (ink[_columns(0.0, 0.5)] == 0).all() and (ink[_columns(0.7, 1.0)] == 0).all()
    ob.modifiers.new("Mirror", "GREASE_PENCIL_MIRROR")
    bpy.context.view_layer.update()
    boxes = _drawing(ob)["mask_layers"][0]["strokes"]
    assert len(boxes) == 2  # the evaluated mask layer: the box and its mirror image
    assert abs(boxes[0]["points"][0][0] - boxes[1]["points"][0][0]) > 0.1
    ink = _line_ink(ob)
    for box in boxes:
        x = np.asarray(box["points"])[:, 0]
        assert x.max() - x.min() == pytest.approx(0.2, abs=1e-4) and 0 < x.min() < x.max() < 1
        assert np.array_equal(ink[_columns(x.min(), x.max())], plain[_columns(x.min(), x.max())])
    matte.translation.x += 7.2 * 120  # 120 frame widths away: past what the backend takes
    bpy.context.view_layer.update()
    with pytest.raises(addon_module("export").ExportError, match="'Matte' reaches more than 100 frame widths"):
        _drawing(ob)


def _color_attribute(layer, name: str, domain: str, rgba: tuple[float, float, float, float]) -> None:
    drawing = layer.get_frame_at(1).drawing
    attribute = drawing.attributes.get(name) or drawing.attributes.new(name, "FLOAT_COLOR", domain)
    attribute.data.foreach_set("color", np.tile(np.array(rgba, np.float32), len(attribute.data)))


def _holdout(style, which: str) -> None:
    setattr(style, f"use_{which}_holdout", True)


GRAYS = {  # name: (how the box's line and fill are coloured, (line gray, fill gray) sent); sRGB of scene-linear
    "black": (lambda ob, layer, style: None, (None, 0.0)),
    "white": (
        lambda ob, layer, style: (setattr(style, "color", (1, 1, 1, 1)), setattr(style, "fill_color", (1, 1, 1, 1))),
        (1.0, 1.0),
    ),
    "18 % gray": (lambda ob, layer, style: setattr(style, "color", (0.18, 0.18, 0.18, 1)), (0.461356, 0.0)),
    "vertex paint, half white": (
        lambda ob, layer, style: _color_attribute(layer, "vertex_color", "POINT", (1, 1, 1, 0.5)),
        (0.735357, 0.0),
    ),
    "fill colour, red": (
        lambda ob, layer, style: _color_attribute(layer, "fill_color", "CURVE", (1, 0, 0, 1)),
        (None, 0.49844),
    ),
    "layer tint, red": (
        lambda ob, layer, style: (setattr(layer, "tint_color", (1, 0, 0)), setattr(layer, "tint_factor", 1.0)),
        (0.49844, 0.49844),
    ),
    "Tint modifier, red": (
        lambda ob, layer, style: _modifier(ob, "TINT", factor=1.0, color=(1.0, 0.0, 0.0)),
        (0.49844, 0.49844),
    ),
    "holdout line": (lambda ob, layer, style: _holdout(style, "stroke"), (1.0, 0.0)),
    "holdout fill": (lambda ob, layer, style: _holdout(style, "fill"), (None, 1.0)),
}


@pytest.mark.parametrize("case", GRAYS)
def test_colours_go_out_as_the_grays_blender_shows(scene, case: str) -> None:
    """The line's colour: the material's, vertex paint mixed over it, then the
    layer tint; the fill's: the material's, the stroke's fill colour, the tint;
    a holdout shows the paper. Gray = Rec. 709 luminance, sRGB-encoded."""
    add_camera()
    ob = add_drawing(BOX)
    layer = ob.data.layers["Lines"]
    style = _material(ob, "Ink and paint", show_stroke=True, show_fill=True)
    _paint(layer, [len(ob.material_slots) - 1])
    setup, (line, fill) = GRAYS[case]
    setup(ob, layer, style)
    bpy.context.view_layer.update()
    (box,) = _export(ob)[0]
    assert box.get("color") == (pytest.approx(line, abs=1e-5) if line is not None else None)
    assert box["fill_color"] == pytest.approx(fill, abs=1e-5) and box["fill"] == 1.0


def test_a_fill_hides_the_lines_under_it_and_not_those_above_it(scene) -> None:
    add_camera()
    ob = add_drawing(LINE)
    plain = _line_ink(ob)
    card = _layer(ob, "Card", _box(0.4, 0.6))  # above the line, a white card without a line
    _material(ob, "Ink", show_stroke=True, show_fill=False)
    _material(ob, "Paper", show_stroke=False, show_fill=True).fill_color = (1.0, 1.0, 1.0, 1.0)
    _paint(card, [1])
    inside, left = _columns(0.4, 0.6), _columns(0.0, 0.4)
    ink = _line_ink(ob)
    assert (ink[inside] == 0).all() and np.array_equal(ink[left], plain[left])  # the card hides the line
    ob.data.layers.move(card, "DOWN")  # the card under the line
    assert np.array_equal(_line_ink(ob), plain)
    ob.data.layers.move(card, "UP")
    card.opacity = 0.5  # a half-transparent card lets half of the line through
    assert np.abs(_line_ink(ob)[inside] - np.ceil(plain[inside] * 0.5)).max() <= 1


def test_strokes_sharing_a_fill_id_fill_one_region_with_a_hole_from_blender_5_1(scene) -> None:
    add_camera()
    ob = add_drawing(LINE)
    rings = {"strokes": [_box(0.2, 0.8)["strokes"][0], _box(0.4, 0.6)["strokes"][0]]}
    rings["strokes"][0]["points"] = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]]
    layer = _layer(ob, "Ring", rings)
    ob.data.layers["Lines"].hide = True
    _material(ob, "Fill", show_stroke=False, show_fill=True)
    slot = len(ob.material_slots) - 1
    _set_curve_attribute(layer, "material_index", "INT", np.array([slot, slot], np.int32))
    if bpy.app.version >= (5, 1, 0):
        _set_curve_attribute(layer, "hide_stroke", "BOOLEAN", np.array([True, True]))
    _set_curve_attribute(layer, "fill_id", "INT", np.array([3, 3], np.int32))  # one fill, as Blender 5.1+ makes holes
    drawing = _drawing(ob)
    image = np.asarray(rasterize_strokes(drawing, 64, 64)).astype(int)
    assert image[ROW, 16] == 0  # the ring
    if bpy.app.version >= (5, 1, 0):  # one region: the inner outline cuts a hole
        assert [s["fill_id"] for s in drawing["strokes"]] == [1, 1] and image[ROW, 32] == 255
    else:  # no fill_id before 5.1: each stroke fills its own region
        assert all("fill_id" not in s for s in drawing["strokes"]) and image[ROW, 32] == 0


BLENDED = {  # a layer's blend mode: the gray it leaves where a 50 % gray card of that layer lies over gray g
    "REGULAR": lambda g: 0.5,  # over: the card hides what is under it
    "MULTIPLY": lambda g: g * 0.5,
    "ADD": lambda g: min(g + 0.5, 1.0),
    "SUBTRACT": lambda g: max(g - 0.5, 0.0),
    "DIVIDE": lambda g: min(g / 0.5, 1.0),
    "HARDLIGHT": lambda g: g,  # hard light of 0.5: 2 x 0.5 x g
}


@pytest.mark.parametrize("blend", BLENDED)
def test_a_layers_blend_mode_goes_out_and_blends_as_blender_does(scene, blend: str) -> None:
    add_camera()
    ob = add_drawing({"strokes": [{**LINE["strokes"][0], "radius": [0.05, 0.05]}]})  # black from row 29 to 35
    card = _layer(ob, "Card", _box(0.4, 0.6))  # above the line: a gray card without a line
    _material(ob, "Ink", show_stroke=True, show_fill=False)
    gray = _material(ob, "Gray", show_stroke=False, show_fill=True)
    gray.fill_color = (0.214041, 0.214041, 0.214041, 1.0)  # scene-linear for an sRGB gray of 0.5
    _paint(card, [1])
    card.hide = True
    plain = np.asarray(rasterize_strokes(_drawing(ob), 64, 64)).astype(float) / 255
    card.hide, card.blend_mode = False, blend
    drawing = _drawing(ob)
    if blend == "REGULAR":  # a Regular layer needs nothing more, so any backend draws it
        assert "layers" not in drawing and all("layer" not in s for s in drawing["strokes"])
    else:
        assert drawing["layers"] == [{"blend": blend}] and [s.get("layer") for s in drawing["strokes"]] == [None, 0]
    image = np.asarray(rasterize_strokes(drawing, 64, 64)).astype(float) / 255
    inside = _columns(0.4, 0.6)
    assert plain[ROW, inside].max() == 0 and plain[ROW - 5, inside].min() == 1
    for row in (ROW, ROW - 5):  # the line under the card, the paper under the card
        expected = np.array([BLENDED[blend](g) for g in plain[row, inside]])
        assert np.abs(image[row, inside] - expected).max() <= 1.5 / 255, (row, image[row, inside], expected)
    outside = _columns(0.0, 0.4)
    assert np.array_equal(image[:, outside], plain[:, outside])  # beside the card nothing changes


def _empty(scale: tuple[float, float, float]):
    empty = bpy.data.objects.new("Parent", None)
    bpy.context.scene.collection.objects.link(empty)
    empty.scale = scale
    return empty


def _scale_along_view(ob) -> None:
    ob.scale = (1.0, 3.0, 1.0)  # y is the camera's axis: the points (on y = 0) stay, the lines widen


def _scale_parented_layer(ob) -> None:
    ob.data.layers["Lines"].parent = _empty((1.0, 1.0, 1.0))
    ob.scale = (2.0, 2.0, 2.0)  # the parent places the layer; the object's scale still widens its lines


SCALES = {  # name: (set-up, Blender's line width over the unscaled one: |object 3x3 @ (1, 1, 1)/sqrt 3|)
    "object scale along the view axis": (_scale_along_view, np.sqrt(11 / 3)),
    "layer scale 0.5 (points move, lines keep their width)": (
        lambda ob: setattr(ob.data.layers["Lines"], "scale", (0.5, 0.5, 0.5)),
        1.0,
    ),
    "layer parented to an empty of scale 2": (
        lambda ob: setattr(ob.data.layers["Lines"], "parent", _empty((2.0, 2.0, 2.0))),
        1.0,
    ),
    "parented layer of an object of scale 2": (_scale_parented_layer, 2.0),
}


@pytest.mark.parametrize("case", SCALES)
def test_line_width_follows_the_objects_scale_only_as_blender_draws_it(scene, case: str) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    before = _export(ob)[0][0]["radius"][0]
    setup, factor = SCALES[case]
    setup(ob)
    bpy.context.view_layer.update()
    assert _export(ob)[0][0]["radius"][0] == pytest.approx(before * factor, rel=1e-4)


def _radii(strokes: list[dict]) -> list[float]:
    return [radius for stroke in strokes for radius in stroke["radius"]]


def test_traced_strokes_keep_their_width_on_a_scaled_object(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    ob.scale = (1.0, 3.0, 1.0)
    bpy.context.view_layer.update()
    layer = _layer(ob, "Traced", SQUARE)  # what the importer writes, as Blender then draws it
    ob.data.layers["Lines"].hide = True
    sent = _export(ob)[0]
    assert _radii(sent) == pytest.approx(_radii(SQUARE["strokes"]), rel=1e-4)
    assert layer.name == "Traced"


def test_strokes_outside_the_camera_frame_are_left_out_and_edges_cut_where_the_frame_ends(scene) -> None:
    add_camera()  # 16:9: the frame covers rows 0.22..0.78 of the square; the band above and below shows nothing
    band = {"points": [[0.3, 0.1], [0.7, 0.1]], "radius": [0.01, 0.01]}
    far = {"points": [[0.5, 0.6], [3.0, 0.6]], "radius": [0.01, 0.01]}  # from inside the frame to 3 widths right
    ob = add_drawing({"strokes": [*SQUARE["strokes"], band, far]})
    beyond = _layer(ob, "Beyond", {"strokes": [{"points": [[0.5, 0.5], [150.0, 0.5]], "radius": [0.01, 0.01]}]})
    beyond.hide = True
    band_only = _layer(ob, "Band", {"strokes": [band]})
    band_only.hide = True
    drawing = _drawing(ob)
    assert len(drawing["strokes"]) == 3  # the band's line is not sent
    assert drawing["frame"] == pytest.approx([0.0, 0.21875, 1.0, 0.78125])
    image = np.asarray(rasterize_strokes(drawing, 64, 64))
    assert (image[:14] == 255).all() and (image[51:] == 255).all()  # paper outside the frame
    assert image[38, 40] < 128 and image[38, 63] < 128  # the long line runs to the frame's edge
    assert addon_module("backend").drawing_needs(drawing)[0] == 3  # an older backend would draw the band
    ob.data.layers["Lines"].hide, beyond.hide = True, False
    with pytest.raises(addon_module("export").ExportError, match="reaches more than 100 frame widths"):
        _drawing(ob)
    beyond.hide, band_only.hide = True, False
    with pytest.raises(addon_module("export").ExportError, match="outside the camera frame"):
        _drawing(ob)


def test_what_lies_outside_the_cameras_clip_range_is_not_sent(scene) -> None:
    camera = add_camera()
    ob = add_drawing(SQUARE)  # 10 units in front of the camera
    near = _layer(ob, "Near", {"strokes": [BOX["strokes"][0]]})
    near.translation = (0.0, -8.0, 0.0)  # 2 units in front of the camera
    export = addon_module("export")
    camera.data.clip_start = 5.0  # the box is nearer than Clip Start: Blender does not draw it
    assert len(_drawing(ob)["strokes"]) == 2
    camera.data.clip_end = 9.0  # now the plus too is beyond Clip End: nothing shows
    with pytest.raises(export.ExportError, match="outside its clip range"):
        _drawing(ob)
    camera.data.clip_start, camera.data.clip_end = 0.1, 100.0
    ob.data.layers["Lines"].rotation = (0.0, 0.0, 1.2)  # the plus turned out of the image plane: it spans depths
    camera.data.clip_end = 10.0
    with pytest.raises(export.ExportError, match="Blender cuts it there"):
        _drawing(ob)


def test_an_object_hidden_in_the_viewport_is_refused(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    ob.hide_set(True)
    with pytest.raises(addon_module("export").ExportError, match="'Sketch' is hidden in the viewport"):
        _drawing(ob)
    ob.hide_set(False)
    ob.hide_viewport = True
    with pytest.raises(addon_module("export").ExportError, match="hidden in the viewport"):
        _drawing(ob)


def test_an_object_without_materials_fills_as_blenders_default_material_does(scene) -> None:
    add_camera()
    ob = add_drawing(BOX)
    layer = ob.data.layers["Lines"]
    _set_curve_attribute(layer, "cyclic", "BOOLEAN", np.array([True]))
    _set_curve_attribute(layer, "fill_id", "INT", np.array([1], np.int32))
    assert not ob.material_slots
    (box,) = _drawing(ob)["strokes"]
    if bpy.app.version >= (5, 1, 0):  # the default material fills, black, where a stroke has a fill_id
        assert box["fill"] == 1.0 and box["fill_color"] == 0.0 and box["opacity"] == 1.0
    else:  # before 5.1 the default material draws lines only
        assert "fill" not in box and box["opacity"] == 1.0


def test_a_flip_effect_mirrors_what_goes_out_and_the_results_show_as_generated(scene) -> None:
    add_camera()
    aside = {"strokes": [{"points": [[0.15, 0.3], [0.3, 0.35], [0.35, 0.45]], "radius": [0.01] * 3}]}
    ob = add_drawing(aside)
    plain = _points(_export(ob)[0])
    flip = ob.shader_effects.new("Flip", "FX_FLIP")
    flip.use_flip_x, flip.use_flip_y = True, False
    assert np.allclose(_points(_export(ob)[0]), np.c_[1 - plain[:, 0], plain[:, 1]], atol=1e-5)
    flip.use_flip_y = True
    assert np.allclose(_points(_export(ob)[0]), 1 - plain, atol=1e-5)
    again = ob.shader_effects.new("Flip back", "FX_FLIP")
    again.use_flip_x, again.use_flip_y = True, False  # two flips of x cancel
    assert np.allclose(_points(_export(ob)[0]), np.c_[plain[:, 0], 1 - plain[:, 1]], atol=1e-5)
    again.show_viewport = False  # an effect switched off in the viewport does nothing
    generated = {"strokes": [{"points": [[0.6, 0.3], [0.8, 0.6]], "radius": [0.01, 0.01]}]}
    _layer(ob, "Generated", generated)  # written back through the job's placement, which keeps the flips
    ob.data.layers["Lines"].hide = True
    assert np.allclose(_points(_export(ob)[0]), generated["strokes"][0]["points"], atol=1e-5)  # shown as generated


def test_flat_caps_go_out_flat_and_closed_strokes_have_none(scene) -> None:
    add_camera()
    ob = add_drawing({"strokes": [*SQUARE["strokes"], BOX["strokes"][0]]})
    layer = ob.data.layers["Lines"]
    _set_curve_attribute(layer, "start_cap", "INT8", np.array([1, 0, 1], np.int8))  # Blender's FLAT is 1
    _set_curve_attribute(layer, "end_cap", "INT8", np.array([1, 1, 1], np.int8))
    _set_curve_attribute(layer, "cyclic", "BOOLEAN", np.array([False, False, True]))
    sent = _drawing(ob)["strokes"]
    assert [(s.get("start_cap"), s.get("end_cap")) for s in sent] == [("flat", "flat"), (None, "flat"), (None, None)]
    row = np.asarray(rasterize_strokes(_drawing(ob), 64, 64))[32]
    ink = np.flatnonzero(row < 128)
    assert (ink.min(), ink.max()) == (19, 44)  # the horizontal line ends at x 0.3 and 0.7, no cap past them


def test_results_land_where_the_drawing_was_at_job_time_on_an_animated_object(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    ob.keyframe_insert("location", frame=1)
    ob.location.x += 2.0
    ob.scale = (1.0, 3.0, 1.0)
    ob.keyframe_insert("location", frame=20)
    ob.keyframe_insert("scale", frame=20)
    scene.frame_set(1)
    ob.scale = (1.0, 1.0, 1.0)
    ob.keyframe_insert("scale", frame=1)
    placement = _export(ob)[1]  # the job, at frame 1
    scene.frame_set(20)  # the artist scrubs while it runs: the object has moved and grown
    layer = addon_module("importer").add_traced_layer(ob, "Generated", {"frames": [SQUARE]}, 1, 1, placement)
    scene.frame_set(1)
    ob.data.layers["Lines"].hide = True
    sent = _export(ob)[0]
    assert layer.name == "Generated"
    assert np.abs(_points(sent) - _points(SQUARE["strokes"])).max() * PX < 0.01  # where the drawing was
    assert _radii(sent) == pytest.approx(_radii(SQUARE["strokes"]), rel=1e-4)  # as wide as generated
