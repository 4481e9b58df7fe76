"""A Blender scene for the demo and the tests: a camera looking at a Grease
Pencil drawing of the bundled example sketch, and the extension installed the
way a user installs it (Blender's extension installer, from the built zip).

Import this only in a process that may import bpy (the bpy wheel, headless).
"""

import sys
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

ROOT = Path(__file__).resolve().parents[1]
MODULE = "bl_ext.user_default.flipsketch"


def install_extension(zip_path: Path):
    """Install and enable the extension zip; return its package module."""
    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True
    )
    if result != {"FINISHED"} or MODULE not in bpy.context.preferences.addons:
        raise RuntimeError(f"installing {zip_path} failed: {result}")
    return sys.modules[MODULE]


def addon_module(name: str):
    return sys.modules[f"{MODULE}.{name}"]


def add_camera(location=(0.0, -10.0, 0.0), rotation=(np.pi / 2, 0.0, 0.0), ortho: bool = False):
    data = bpy.data.cameras.new("Camera")
    if ortho:
        data.type, data.ortho_scale = "ORTHO", 8.0
    camera = bpy.data.objects.new("Camera", data)
    camera.location, camera.rotation_euler = location, rotation
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.scene.camera = camera
    bpy.context.view_layer.update()
    return camera


def add_drawing(strokes: dict, name: str = "Sketch", frame: int = 1, depth: float = 10.0):
    """A GP object whose layer 'Lines' shows `strokes` (square-frame schema)
    at `frame`, on a plane `depth` in front of the scene camera."""
    projection, importer = addon_module("projection"), addon_module("importer")
    export = addon_module("export")
    scene = bpy.context.scene
    frame_through = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    camera = scene.camera.matrix_world
    forward = np.array(camera.to_3x3() @ Vector((0.0, 0.0, -1.0)))
    forward /= np.linalg.norm(forward)
    point = np.array(camera.translation) + forward * depth
    placement = export.Placement(frame_through.matrix.tolist(), frame_through.aspect, point.tolist(), forward.tolist())
    gp_module = addon_module("gpencil")
    ob = bpy.data.objects.new(name, gp_module.gp_collection().new(name))
    scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    layer = importer.add_traced_layer(ob, "Lines", {"frames": [strokes]}, frame, 1, placement)
    ob.data.layers.active = layer
    return ob


def example_strokes() -> dict:
    """The bundled cat sketch as centre-line strokes (traced by the backend)."""
    from PIL import Image

    from flipsketch.trace import trace_frame

    return trace_frame(Image.open(ROOT / "examples" / "cat.png"))


def pump_until_done(timeout_s: float = 900.0) -> None:
    """Drive the add-on's timer by hand: the bpy module has no event loop."""
    import time

    runtime, backend = addon_module("runtime"), addon_module("backend")
    deadline = time.time() + timeout_s
    while backend.running_jobs() or not backend.messages.empty():
        runtime.pump()
        if time.time() > deadline:
            raise TimeoutError("the FlipSketch job did not finish")
        time.sleep(0.05)
    runtime.pump()
