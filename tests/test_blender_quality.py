"""Issue 14 in the real bpy module: the quality preset (tooltips carry the
backend's measured time ratios), the reference switches reaching the job, and
ranked variants (best visible, scores on the rows, a minimum score hiding
failures, storyboard shots keeping their best)."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import bpy
import pytest

from flipsketch.params import QUALITY_PRESETS, QUALITY_TIME_RATIOS, AnimateParams

from .conftest import ROOT
from .test_blender import SQUARE, addon, scene  # noqa: F401
from .test_blender_jobs import Layout

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, pump_until_done

RATIO = re.compile(r"(\d+(?:\.\d+)?)× the time of plain text-to-video")


def _animate(scene) -> tuple[object, dict]:
    """Animate the drawing at frame 1; the job's row and its run.json."""
    scene.frame_set(1)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    key = scene.flipsketch.jobs[-1].key
    pump_until_done()
    job = addon_module("runtime").find_job(key)
    return job, json.loads((Path(job.out_dir) / "run.json").read_text(encoding="utf-8"))


def _visible(ob) -> list[str]:
    return [layer.name for layer in ob.data.layers if layer.name.startswith("FlipSketch") and not layer.hide]


def test_quality_tooltips_state_the_backends_measured_ratios_and_presets_reach_the_params(scene) -> None:
    settings = scene.flipsketch
    items = settings.bl_rna.properties["quality"].enum_items
    assert [item.identifier for item in items] == list(QUALITY_PRESETS)
    assert [item.name for item in items] == ["Draft", "Standard", "Paper-exact"]
    ratios = {item.identifier: float(RATIO.search(item.description).group(1)) for item in items}
    assert ratios == QUALITY_TIME_RATIOS
    assert settings.bl_rna.properties["quality"].default == "standard"
    assert "align" not in settings.bl_rna.properties  # the preset replaced the old toggle

    expected = {"draft": (False, 0.02), "standard": (True, 0.02), "paper": (True, 0.0)}
    for quality, (align, tol) in expected.items():
        settings.quality = quality
        params = AnimateParams.from_dict(settings.params())
        assert (params.quality, params.align, params.align_tol) == (quality, align, tol)
    settings.reference, settings.released_input_range = "released", True
    params = AnimateParams.from_dict(settings.params())
    assert (params.reference, params.released_input_range, params.min_score) == ("released", True, None)
    assert "min_score" not in settings.params()  # Hide failures off: nothing is hidden
    settings.use_min_score, settings.min_score = True, 0.9
    assert AnimateParams.from_dict(settings.params()).min_score == pytest.approx(0.9)

    settings.show_advanced = True
    layout = Layout()
    addon_module("panels").FLIPSKETCH_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    shown = [name for kind, name in layout.calls if kind == "prop"]
    assert "quality" in shown and "align" not in shown
    for name in ("tau_align", "reference", "released_input_range", "use_min_score", "min_score"):
        assert name in shown


def test_variants_are_ranked_best_visible_and_quality_and_reference_reach_the_job(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    settings = scene.flipsketch
    settings.variants, settings.seed, settings.draft = 3, 11, True
    settings.quality, settings.tau_align = "paper", 1  # one aligned step keeps it short
    settings.reference, settings.released_input_range = "released", True
    job, record = _animate(scene)
    assert job.state == "imported", job.message
    params = record["params"]
    assert (params["quality"], params["align"], params["align_tol"]) == ("paper", True, 0.0)
    assert (params["reference"], params["released_input_range"], params["min_score"]) == ("released", True, None)

    ranked = record["variants"]
    assert sorted(entry["seed"] for entry in ranked) == [11, 12, 13]
    assert [entry["score"] for entry in ranked] == sorted((entry["score"] for entry in ranked), reverse=True)
    assert [(v.seed, v.folder) for v in job.variants] == [(e["seed"], e["folder"]) for e in ranked]
    assert [v.score for v in job.variants] == pytest.approx([e["score"] for e in ranked], abs=1e-6)
    best = ranked[0]["seed"]
    assert job.variants[0].layer == f"FlipSketch: the cat meows (seed {best})"
    assert _visible(ob) == [job.variants[0].layer]  # the best variant's layer is the one shown
    assert all(ob.data.layers[v.layer].hide for v in job.variants[1:])
    empty = bpy.data.objects[job.sequence_object]
    assert empty.name == job.variants[0].layer and not empty.hide_viewport
    assert Path(bpy.path.abspath(empty.data.filepath)).parent == Path(job.out_dir) / f"variant_{best}" / "sequence"
    summary = addon_module("panels").job_summary(job)
    assert summary.endswith(f"seeds 11-13 · score {job.variants[0].score:.3g}")


def test_a_minimum_score_leaves_failures_out(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    settings = scene.flipsketch
    settings.variants, settings.seed, settings.draft = 2, 3, True
    job, record = _animate(scene)
    scores = [entry["score"] for entry in record["variants"]]
    assert job.state == "imported" and scores[0] > scores[1]
    best = record["variants"][0]["seed"]
    assert best == 4 and [v.seed for v in job.variants] == [4, 3]  # the ranking's order, not the seeds'
    assert _visible(ob) == [job.variants[0].layer] == [f"FlipSketch: the cat meows (seed {best})"]

    settings.use_min_score, settings.min_score = True, (scores[0] + scores[1]) / 2
    empties = len(bpy.data.objects)
    job, record = _animate(scene)  # the same seeds again: the same scores
    assert job.state == "imported", job.message
    assert [entry["hidden"] for entry in record["variants"]] == [False, True]
    assert record["params"]["min_score"] == pytest.approx(settings.min_score)
    shown, failed = job.variants
    assert shown.layer and ob.data.layers[shown.layer].hide is False
    assert failed.layer == "" and job.layer_names() == [shown.layer]  # not imported: no layer, no image
    assert [v.score for v in job.variants] == pytest.approx(scores, abs=1e-6)
    assert job.message == "1 variant(s) below the minimum score not imported; their files are in the folder."
    assert len(bpy.data.objects) == empties + 1  # one image empty: the shown variant's
    layout = Layout()
    addon_module("panels").draw_job(layout, job)
    assert ("label", f"Not imported · seed {failed.seed} · score {failed.score:.3g}") in layout.calls

    settings.min_score = 1.0  # every variant fails: nothing comes in, the reason says what to do
    layers, empties = len(ob.data.layers), len(bpy.data.objects)
    job, _ = _animate(scene)
    assert job.state == "failed" and (len(ob.data.layers), len(bpy.data.objects)) == (layers, empties)
    assert f"every variant scored below the minimum score 1 (best: {scores[0]:.3g}" in job.message
    assert "lower Min score or turn Hide failures off" in job.message


def test_a_storyboard_shot_with_variants_keeps_its_best(scene) -> None:
    add_camera()
    scene.timeline_markers.new("sh010", frame=1)
    ob = add_drawing(SQUARE)
    scene.flipsketch.draft = True
    assert bpy.ops.flipsketch.shots_from_markers() == {"FINISHED"}
    shot = scene.flipsketch.shots[0]
    shot.prompt, shot.variants = "the plus spins", 2
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    pump_until_done()
    assert shot.state == "done", shot.message
    job = addon_module("runtime").find_job(shot.job_key)
    record = json.loads((Path(job.out_dir) / "run.json").read_text(encoding="utf-8"))
    best, second = record["variants"]
    assert [(v.seed, bool(v.layer)) for v in job.variants] == [(best["seed"], True), (second["seed"], False)]
    assert _visible(ob) == job.layer_names() == [job.variants[0].layer]
    assert bpy.ops.flipsketch.storyboard_to_sequencer() == {"FINISHED"}
    (strip,) = [s for s in scene.sequence_editor.strips if s.type == "IMAGE"]
    folder = Path(job.out_dir) / best["folder"] / "sequence"
    assert Path(bpy.path.abspath(strip.directory)) == folder
    assert strip.frame_final_duration == shot.frame_end - shot.frame_start + 1  # the strip covers its shot
