"""Benchmark: the Animate Sketch button (export of the drawing) at 30k and 100k points.

Runs in the bpy module with the built extension (python3.11 build.py zip):

    PYTHONPATH=backend .venv/bin/python tests/bench_export.py [dist/flipsketch-0.1.0.zip]

Prints, per size, the median time of (a) the previous per-stroke export (kept
here as the baseline), (b) the vectorised export_drawing and (c) the whole
button (bpy.ops.flipsketch.animate, the job thread aimed at a closed port),
and the ratios b/a and c/a. Budget: (c) <= 50 ms at 30k points.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="flipsketch-bench-"))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from scene import add_camera, addon_module, install_extension  # noqa: E402

REPEATS = 7


def baseline_export(ob, frame_number: int, frame) -> list[dict]:
    """The export as it was before vectorising: a projection and list
    conversion per stroke (original data, no modifiers)."""
    gpencil = addon_module("gpencil")
    strokes, right = [], None
    for layer in ob.data.layers:
        data = gpencil.read_strokes(layer, frame_number)
        if layer.hide or data is None:
            continue
        matrix = np.array(ob.matrix_world @ layer.matrix_local)
        world = (np.c_[data.positions, np.ones(len(data.positions))] @ matrix.T)[:, :3]
        scale = float(np.cbrt(abs(np.linalg.det(matrix[:3, :3])))) or 1.0
        if right is None:
            origins, _ = frame.rays(np.array([[0.4, 0.5], [0.6, 0.5]]))
            right = (origins[1] - origins[0]) / np.linalg.norm(origins[1] - origins[0])
        xy, _ = frame.to_square(world)
        edge, _ = frame.to_square(world + right * (data.radius[:, None] * scale))
        radius = np.abs(edge[:, 0] - xy[:, 0])
        for points, r, opacity in zip(data.split(xy), data.split(radius), data.split(data.opacity), strict=True):
            strokes.append(
                {"points": points.round(6).tolist(), "radius": r.round(6).tolist(), "opacity": float(opacity.mean())}
            )
    return strokes


def drawing(points: int, per_stroke: int):
    """A GP object of `points` points in strokes of `per_stroke`, in front of the camera, inside its frame."""
    gpencil = addon_module("gpencil")
    ob = bpy.data.objects.new("Bench", gpencil.gp_collection().new("Bench"))
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    layer = ob.data.layers.new("Lines")
    rng = np.random.default_rng(0)
    strokes = []
    for _ in range(points // per_stroke):
        start = rng.uniform(-1, 1, 3) * [2.5, 0, 1.3]  # well inside the 16:9 camera frame
        strokes.append(start + np.cumsum(rng.normal(0, 0.02, (per_stroke, 3)) * [1, 0, 1], axis=0))
    gpencil.write_strokes(layer, 1, strokes, [np.full(per_stroke, 0.01)] * len(strokes))
    return ob


def median_ms(run) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    zip_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist" / "flipsketch-0.1.0.zip"
    bpy.ops.wm.read_factory_settings(use_empty=True)
    install_extension(zip_path)
    prefs = bpy.context.preferences.addons["bl_ext.user_default.flipsketch"].preferences
    prefs.backend_mode, prefs.remote_url = "REMOTE", "http://127.0.0.1:9"  # nothing listens: the thread fails
    prefs.output_dir = tempfile.mkdtemp(prefix="flipsketch-bench-out-")
    export, projection, runtime = addon_module("export"), addon_module("projection"), addon_module("runtime")
    print("points  stroke  (a) before ms  (b) export ms  b/a    (c) button ms  c/a")
    for points, per_stroke in ((30_000, 100), (30_000, 10), (100_000, 100)):
        bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
        scene = bpy.context.scene
        scene.flipsketch.prompt = "bench"
        add_camera()
        ob = drawing(points, per_stroke)
        frame = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
        sent = export.export_drawing(ob, 1, frame)[0]["strokes"]
        assert len(sent) == len(baseline_export(ob, 1, frame)) == points // per_stroke
        a = median_ms(lambda ob=ob, frame=frame: baseline_export(ob, 1, frame))
        b = median_ms(lambda ob=ob, frame=frame: export.export_drawing(ob, 1, frame))
        c = median_ms(bpy.ops.flipsketch.animate)
        print(f"{points:6d}  {per_stroke:6d}  {a:13.1f}  {b:13.1f}  {b / a:5.2f}  {c:13.1f}  {c / a:5.2f}")
        time.sleep(0.5)
        runtime.pump()


if __name__ == "__main__":
    main()
