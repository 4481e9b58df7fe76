"""The main job end to end, in headless Blender (the bpy module).

A scene with a camera and a Grease Pencil drawing of the bundled example is
built, the extension is installed from the zip like a user would, and
Animate Sketch runs through the same operator the sidebar button calls, with
the managed local backend. The results come back as an image sequence and a
new Grease Pencil layer; outputs/demo/ receives demo.blend, the GIF and the
contact sheet.

Model: FLIPSKETCH_MODEL (Hugging Face id or folder) when set, else a tiny
random model (its frames are noise; everything else is the real path).

    .venv/bin/python examples/blender_demo.py dist/flipsketch-0.1.0.zip
"""

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "demo"
shutil.rmtree(OUT, ignore_errors=True)
(OUT / "blender-user").mkdir(parents=True)
os.environ["BLENDER_USER_RESOURCES"] = str(OUT / "blender-user")  # never touch the user's Blender

import bpy  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, example_strokes, install_extension, pump_until_done  # noqa: E402


def model_settings() -> tuple[str, str, bool]:
    """(model, subfolder, is_tiny)."""
    if os.environ.get("FLIPSKETCH_MODEL"):
        return os.environ["FLIPSKETCH_MODEL"], "", False
    from flipsketch.tiny_model import TINY_NOTICE, create_tiny_model

    tiny = ROOT / "outputs" / "models" / "tiny"
    if not (tiny / "model_index.json").is_file():
        create_tiny_model(tiny)
    print(TINY_NOTICE)
    return str(tiny), "", True


def main(zip_path: Path) -> int:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    install_extension(zip_path)
    prefs = bpy.context.preferences.addons["bl_ext.user_default.flipsketch"].preferences
    prefs.model, prefs.model_subfolder, tiny = model_settings()
    prefs.backend_python = sys.executable  # this venv has the backend installed (build.py set it up)
    prefs.backend_path = str(OUT / "backend")
    prefs.output_dir = str(OUT / "results")
    prefs.device = "auto"

    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 1280, 720
    add_camera()
    drawing = add_drawing(example_strokes())
    settings = scene.flipsketch
    settings.prompt = "the cat turns its head and meows"
    settings.frames, settings.timing = 8, "2"
    if tiny:  # seconds instead of minutes on a CPU; the real model keeps the paper's defaults
        settings.steps, settings.tau_align, settings.tau_compose = 10, 3, 6
    print(f"Animating '{drawing.name}' in headless Blender {bpy.app.version_string}…", flush=True)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    try:
        pump_until_done()
    finally:
        addon_module("backend").stop_managed_server()
    job = settings.jobs[-1]
    if job.state != "imported":
        print(f"The job ended {job.state}: {job.message}", file=sys.stderr)
        return 1
    layer = drawing.data.layers[job.variants[0].layer]
    bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "demo.blend"))
    for name in ("animation.gif", "contact_sheet.png", "animation.mp4"):
        shutil.copyfile(Path(job.out_dir) / name, OUT / name)
    keys = [f.frame_number for f in layer.frames]
    print(f"Imported layer '{layer.name}': keyframes at {keys}; image sequence '{layer.name}' from frame {job.frame}")
    print(f"Longest main-thread pump: {addon_module('runtime').pump_stats['longest_ms']:.1f} ms")
    print(
        f"Demo outputs: {OUT} (demo.blend, animation.gif, animation.mp4, contact_sheet.png; job files in {job.out_dir})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
