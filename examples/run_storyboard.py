"""Animate a .blend's storyboard in headless Blender and save the result.

    .venv/bin/python examples/run_storyboard.py EXTENSION.zip IN.blend OUT.blend [--force] [--backend-python PY]
    (or: python3.11 build.py storyboard IN.blend OUT.blend [--force])

Runs every shot that is not done (all with --force) through the same operator
as the panel's Animate Storyboard button, with the managed local backend, and
saves OUT.blend. Rerunning on OUT.blend resumes: finished shots are skipped.
Model: FLIPSKETCH_MODEL, else the model saved in the file's add-on preferences.
Backend: this interpreter, or --backend-python (one with the backend installed).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="flipsketch-blender-"))

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene import addon_module, install_extension, pump_until_done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extension")
    parser.add_argument("blend_in")
    parser.add_argument("blend_out")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--backend-python", default=sys.executable, help="interpreter with the backend installed")
    args = parser.parse_args()
    install_extension(Path(args.extension))
    bpy.ops.wm.open_mainfile(filepath=str(Path(args.blend_in).resolve()))
    prefs = bpy.context.preferences.addons["bl_ext.user_default.flipsketch"].preferences
    prefs.backend_python = args.backend_python
    if os.environ.get("FLIPSKETCH_MODEL"):
        prefs.model, prefs.model_subfolder = os.environ["FLIPSKETCH_MODEL"], ""
    prefs.output_dir = str(Path(args.blend_out).resolve().parent / "flipsketch")
    try:
        bpy.ops.flipsketch.animate_storyboard(force=args.force)
        pump_until_done()
    finally:
        addon_module("backend").stop_managed_server()
    shots = bpy.context.scene.flipsketch.shots
    for shot in shots:
        print(f"{shot.name}: {shot.state} {shot.message}".rstrip())
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(args.blend_out).resolve()))
    return 0 if all(shot.state == "done" for shot in shots) else 1


if __name__ == "__main__":
    sys.exit(main())
