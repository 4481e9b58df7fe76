"""The job layer in the real bpy module: job rows survive the list growing
under them, prompts with commas, progress that ends with the import,
Extend/Regenerate refusing cleanly when their data is gone, and the sidebar
(draft size, unsaved-file notice, every job listed, tooltips)."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import inspect
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import bpy
import pytest

from flipsketch.errors import InputError
from flipsketch.params import AnimateParams

from .conftest import ROOT
from .test_blender import FAST, SQUARE, addon, preferences, scene  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, pump_until_done

COMMA_PROMPT = "The cat turns its head, then it meows"
# Row counts at which adding one more row makes Blender reallocate the list
# (its ID-property arrays grow 0, 4, 8, 16, 25, 35, …): the new rows 5, 9, 17, 26, 36.
GROWS_AT = (4, 8, 16, 25, 35)
# Reading a row after the list moved returns stale memory only when something
# reused it meanwhile (2 of 40 tries read a wrong parent before the fix), so the
# test tries each growth step and operator many times.
ROUNDS = 10
ROW_FIELDS = ("key", "kind", "prompt", "state", "object_name", "camera_name", "frame", "timing", "seed", "out_dir")
ROW_FIELDS += ("placement", "sequence_object", "first_key", "key_count", "sequence_first")


def follow(key: str, timeout_s: float = 600.0) -> list[tuple[str, float, bool]]:
    """Pump (as Blender's timer would) until no job runs; every distinct
    (state, progress, result layers exist) the job's row showed on the way."""
    runtime, backend = addon_module("runtime"), addon_module("backend")
    seen: list[tuple[str, float, bool]] = []
    deadline = time.time() + timeout_s
    while True:
        running = backend.running_jobs() or not backend.messages.empty()
        runtime.pump()
        job = runtime.find_job(key)
        ob = bpy.data.objects.get(job.object_name)
        in_scene = bool(job.variants) and all(ob.data.layers.get(name) for name in job.layer_names())
        row = (job.state, round(job.progress, 6), in_scene)
        if not seen or seen[-1] != row:
            seen.append(row)
        if not running:
            return seen
        assert time.time() < deadline, "the job did not end"
        time.sleep(0.005)


def test_a_prompt_with_commas_extends_and_regenerates_and_progress_ends_with_the_import(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    scene.flipsketch.prompt = COMMA_PROMPT
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    key = scene.flipsketch.jobs[-1].key
    rows = follow(key)
    runtime = addon_module("runtime")
    job = runtime.find_job(key)
    assert job.state == "imported", job.message
    assert rows[-1] == ("imported", 1.0, True)
    assert all(progress < 1 for state, progress, _ in rows[:-1])  # 100 % only once the layers are there
    assert all(not in_scene for state, _, in_scene in rows if state != "imported")
    layer = job.variants[0].layer
    assert layer == f"FlipSketch: {COMMA_PROMPT}" and job.layer_names() == [layer]

    ob.data.layers.active = ob.data.layers[layer]
    assert bpy.ops.flipsketch.extend.poll()
    assert bpy.ops.flipsketch.extend() == {"FINISHED"}
    extension = scene.flipsketch.jobs[-1].key
    assert follow(extension)[-1] == ("imported", 1.0, True)
    assert [f.frame_number for f in ob.data.layers[layer].frames] == [1, 3, 5, 7, 9, 11, 13]
    scene.flipsketch.seed = 99
    assert bpy.ops.flipsketch.regenerate(key=extension) == {"FINISHED"}
    regenerated = scene.flipsketch.jobs[-1].key
    assert (runtime.find_job(regenerated).kind, runtime.find_job(regenerated).regenerates) == ("regenerate", extension)
    assert follow(regenerated)[-1] == ("imported", 1.0, True)
    assert runtime.find_job(extension).state == "replaced"
    assert [(v.layer, v.seed) for v in runtime.find_job(regenerated).variants] == [(layer, 99)]
    assert [f.frame_number for f in ob.data.layers[layer].frames] == [1, 3, 5, 7, 9, 11, 13]


def _reset_settings(scene, parent: dict, layer: str, rows_before: int):
    """A fresh job list of `rows_before` rows whose last is `parent` (its values and layer)."""
    scene.property_unset("flipsketch")  # frees the list: the next adds grow it from nothing
    settings = scene.flipsketch
    for name, value in FAST.items():
        setattr(settings, name, value)
    settings.prompt = ""  # an extension then takes its parent's prompt, one more value read from the row
    for number in range(rows_before - 1):
        filler = settings.jobs.add()
        filler.key, filler.state, filler.prompt = f"filler{number}", "failed", f"filler {number}"
    row = settings.jobs.add()
    for name, value in parent.items():
        setattr(row, name, value)
    row.variants.add().layer = layer
    return settings.jobs


def test_extend_and_regenerate_read_their_job_before_the_list_grows(scene, addon) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    job = scene.flipsketch.jobs[-1]
    assert job.state == "imported", job.message
    parent, layer = {name: getattr(job, name) for name in ROW_FIELDS}, job.variants[0].layer
    ob.data.layers.active = ob.data.layers[layer]
    duration = bpy.data.objects[parent["sequence_object"]].image_user.frame_duration
    expected = {
        "extend": dict(
            kind="extend", parent_key=parent["key"], regenerates="", prompt=parent["prompt"], frame=7, sequence_first=9
        ),
        "regenerate": dict(kind="regenerate", parent_key="", regenerates=parent["key"], frame=1, sequence_first=1),
    }
    same = dict(
        object_name=ob.name,
        camera_name=parent["camera_name"],
        target_layer=layer,
        sequence_object=parent["sequence_object"],
        timing=2,
        placement=parent["placement"],
    )
    assert duration == 8
    # Nothing listens at that port: the new jobs fail at once; their rows are what is checked.
    with preferences(addon, backend_mode="REMOTE", remote_url="http://127.0.0.1:9"):
        for rows_before in GROWS_AT * ROUNDS:
            for operator in ("extend", "regenerate"):
                jobs = _reset_settings(scene, parent, layer, rows_before)
                if operator == "extend":
                    assert bpy.ops.flipsketch.extend() == {"FINISHED"}
                else:
                    assert bpy.ops.flipsketch.regenerate(key=parent["key"]) == {"FINISHED"}
                assert len(jobs) == rows_before + 1
                new = jobs[rows_before]
                got = {name: getattr(new, name) for name in [*expected[operator], *same]}
                assert got == {**expected[operator], **same}, (operator, rows_before)
                assert jobs[rows_before - 1].key == parent["key"]  # the parent's row is unchanged
    pump_until_done()


def test_extend_and_regenerate_report_what_is_gone(scene, addon, tmp_path: Path) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    scene, ob = bpy.context.scene, bpy.data.objects["Sketch"]
    with preferences(addon, output_dir="//flipsketch/"):
        assert bpy.ops.flipsketch.animate() == {"FINISHED"}
        pump_until_done()
    job = scene.flipsketch.jobs[-1]
    assert job.state == "imported", job.message
    key, layer, sequence = job.key, ob.data.layers[job.variants[0].layer], bpy.data.objects[job.sequence_object]
    assert job.out_dir.startswith("//flipsketch/")  # relative to the .blend: the folder can move with it
    assert addon_module("runtime").job_folder(job).parent == tmp_path / "flipsketch"
    image = sequence.data
    assert image.filepath.startswith("//flipsketch/")  # beside the .blend, and moves with it
    assert Path(bpy.path.abspath(image.filepath)).is_file()
    jobs, runtime = scene.flipsketch.jobs, addon_module("runtime")

    def refused(run, match: str) -> None:
        count = len(jobs)
        with pytest.raises(RuntimeError, match=match) as caught:
            run()
        assert "Traceback" not in str(caught.value) and len(jobs) == count

    def regenerate():
        return bpy.ops.flipsketch.regenerate(key=key)

    def extend_from_layer():
        bpy.context.view_layer.objects.active, ob.data.layers.active = ob, layer
        return bpy.ops.flipsketch.extend()

    def extend_from_sequence():
        bpy.context.view_layer.objects.active = sequence
        return bpy.ops.flipsketch.extend()

    text = bpy.data.texts[f"FlipSketch {key}.json"]
    record = text.as_string()
    bpy.data.texts.remove(text)
    refused(regenerate, rf"The text block 'FlipSketch {key}.json' or the job's placement is gone")
    bpy.data.texts.new(f"FlipSketch {key}.json").write(record)

    placement, runtime.find_job(key).placement = runtime.find_job(key).placement, ""
    refused(extend_from_layer, f"The job {key} has lost its placement data")
    refused(regenerate, "or the job's placement is gone")
    runtime.find_job(key).placement = placement

    folder = Path(bpy.path.abspath(image.filepath)).parent
    folder.rename(folder.with_name("moved"))
    refused(extend_from_sequence, "The clip's image files are gone")
    refused(regenerate, f"The image sequence '{sequence.name}' has lost its image or its files")
    folder.with_name("moved").rename(folder)

    sequence.data = None
    refused(regenerate, f"The image sequence '{sequence.name}' has lost its image")
    sequence.data = image

    name, layer.name = layer.name, "Renamed by the artist"
    refused(regenerate, f"The layer '{name}' is gone")
    refused(extend_from_sequence, f"The clip's layer '{name}' is gone")
    layer.name = name

    ob.name = "Renamed"
    refused(regenerate, "The object 'Sketch' is gone")
    ob.name = "Sketch"
    refused(lambda: bpy.ops.flipsketch.regenerate(key="no-such-job"), "Only an imported animation")
    assert extend_from_layer() == {"FINISHED"}  # all back: it runs
    running = jobs[-1].key
    refused(extend_from_layer, f"Job {running} is still writing into the layer '{name}'")  # one at a time
    refused(regenerate, f"Job {running} is still writing into the layer")
    pump_until_done()
    assert jobs[-1].state == "imported", jobs[-1].message

    bpy.ops.wm.save_mainfile()
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.copytree(tmp_path, moved)  # the project folder moved (or copied to another machine)
    bpy.ops.wm.open_mainfile(filepath=str(moved / "shot.blend"))
    runtime = addon_module("runtime")
    assert runtime.best_sequence_folder(runtime.find_job(key)).parent.parent == moved / "flipsketch"
    assert (runtime.best_sequence_folder(runtime.find_job(key)) / "seq_0001.png").is_file()
    (moved / "takes" / "two").mkdir(parents=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(moved / "takes" / "two" / "shot.blend"))  # Save As, two folders down
    assert runtime.find_job(key).out_dir.startswith("//../../flipsketch/")  # remapped as Blender remaps images
    assert (runtime.best_sequence_folder(runtime.find_job(key)) / "seq_0001.png").is_file()


class Layout:
    """Records what a draw function puts in a layout: the bpy module has no
    window, so Blender cannot hand a real one to a panel here."""

    def __init__(self, calls: list | None = None) -> None:
        self.calls = [] if calls is None else calls

    def _child(self, *args, **kwargs) -> "Layout":
        return Layout(self.calls)

    row = column = box = split = _child

    def prop(self, data, name: str, **kwargs) -> None:
        self.calls.append(("prop", name))

    prop_search = prop

    def label(self, text: str = "", **kwargs) -> None:
        self.calls.append(("label", text))

    def operator(self, idname: str, **kwargs) -> SimpleNamespace:
        self.calls.append(("operator", idname))
        return SimpleNamespace()

    def template_list(self, list_type: str, *args, **kwargs) -> None:
        self.calls.append(("template_list", list_type))

    def progress(self, text: str = "", **kwargs) -> None:
        self.calls.append(("progress", text))


class Drawn:
    """`target` with a recording layout, as `self` of a draw method."""

    def __init__(self, target, layout: Layout) -> None:
        self.target, self.layout = target, layout

    def __getattr__(self, name: str):
        return getattr(self.target, name)


def _labels(calls: list) -> list[str]:
    return [text for kind, text in calls if kind == "label"]


def test_sidebar_lists_every_job_with_frame_object_seed_and_says_when_unsaved(scene, addon, tmp_path: Path) -> None:
    add_camera()
    add_drawing(SQUARE)
    panels, settings = addon_module("panels"), scene.flipsketch
    for number in range(20):
        job = settings.jobs.add()
        job.key, job.prompt, job.state, job.object_name = f"k{number}", f"job {number}", "imported", "Sketch"
        job.frame, job.seed = number + 1, 100 + number
        job.variants.add().layer = f"FlipSketch: job {number}"
    ranked = settings.jobs[7]
    ranked.variants.add().layer = "FlipSketch: job 7 (seed 108)"
    ranked.variants[0].seed, ranked.variants[1].seed, ranked.variants[1].score = 107, 108, 0.75
    settings.jobs[19].state, settings.jobs[19].progress = "running", 0.42

    assert panels.job_summary(settings.jobs[3]) == "job 3 · Sketch f4 · seed 103"
    assert panels.job_summary(ranked) == "job 7 · Sketch f8 · seeds 107-108"
    assert panels.job_summary(settings.jobs[19]) == "job 19 · Sketch f20 · seed 119 · 42%"
    jobs_list = SimpleNamespace(filter_name="", bitflag_filter_item=1 << 30)
    flags, order = panels.FLIPSKETCH_UL_jobs.filter_items(jobs_list, bpy.context, settings, "jobs")
    assert flags == [1 << 30] * 20 and order == list(range(19, -1, -1))  # all 20, newest first
    jobs_list.filter_name = "job 1*"
    flags, _ = panels.FLIPSKETCH_UL_jobs.filter_items(jobs_list, bpy.context, settings, "jobs")
    shown = [settings.jobs[i].prompt for i, flag in enumerate(flags) if flag]
    assert shown == ["job 1", *(f"job {n}" for n in range(10, 20))]
    layout = Layout()
    panels.draw_job(layout, ranked)
    assert _labels(layout.calls)[-2:] == [
        "FlipSketch: job 7 · seed 107",
        "FlipSketch: job 7 (seed 108) · seed 108 · score 0.75",
    ]
    assert ("operator", "flipsketch.regenerate") in layout.calls

    with preferences(addon, output_dir="//flipsketch/"):
        layout = Layout()
        panels.FLIPSKETCH_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
        assert "The .blend is not saved: results go to a temporary folder." in _labels(layout.calls)
        assert ("template_list", "FLIPSKETCH_UL_jobs") in layout.calls
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "saved.blend"))
        layout = Layout()
        panels.FLIPSKETCH_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
        assert not any("not saved" in text for text in _labels(layout.calls))


def test_device_is_shown_only_for_the_local_backend(addon) -> None:
    for mode, shown in (("LOCAL", True), ("REMOTE", False)):
        with preferences(addon, backend_mode=mode):
            layout = Layout()
            type(addon).draw(Drawn(addon, layout), bpy.context)
            assert (("prop", "device") in layout.calls) is shown
            assert (("prop", "remote_url") in layout.calls) is not shown


def test_draft_and_size_cover_the_backends_whole_range(scene) -> None:
    settings = scene.flipsketch
    size = settings.bl_rna.properties["resolution"]
    assert (size.hard_min, size.hard_max) == (64, 1024)
    for width in (64, 1024):
        AnimateParams.from_dict({**settings.params(), "width": width, "height": width})
    for width in (56, 1032):  # the backend refuses just outside: the add-on's bounds are its bounds
        with pytest.raises(InputError):
            AnimateParams.from_dict({**settings.params(), "width": width, "height": width})
    for typed, kept in ((300, 304), (70, 72), (1000, 1000), (2000, 1024), (10, 64)):
        settings.resolution = typed
        assert settings.resolution == kept
        assert (settings.params()["width"], settings.params()["height"]) == (kept, kept)
    settings.draft = True
    assert (settings.params()["width"], settings.params()["height"]) == (128, 128)
    AnimateParams.from_dict(settings.params())
    motion = settings.bl_rna.properties["motion"].description
    assert "0 = stays close to your drawing" in motion and "1 = most motion" in motion


def test_every_visible_property_has_a_tooltip_without_stray_indentation(addon) -> None:
    modules = ("operators", "preferences", "properties", "panels", "storyboard", "training")
    classes = [cls for name in modules for cls in addon_module(name)._classes]
    missing, ragged = [], []
    for cls in classes:
        description = cls.bl_rna.description
        if "\n" in description or "  " in description or description != description.strip():
            ragged.append((cls.__name__, description))
        own = inspect.get_annotations(cls)  # the add-on's properties, not those Blender's types have
        if issubclass(cls, bpy.types.Operator):  # its own properties, not the operator type's (name, …)
            category, name = cls.bl_idname.split(".")
            properties = getattr(getattr(bpy.ops, category), name).get_rna_type().properties
        else:
            properties = cls.bl_rna.properties
        for prop in properties:
            if prop.identifier in own and not prop.is_hidden and not prop.description.strip():
                missing.append(f"{cls.__name__}.{prop.identifier}")
    assert (missing, ragged) == ([], [])
    assert len(classes) > 20 and sum(len(inspect.get_annotations(cls)) for cls in classes) > 90


def test_a_failed_regenerate_keeps_the_clip_a_card_goes_to_its_jobs_scene_and_undo_does_not_strand_a_row(
    scene, addon
) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    runtime = addon_module("runtime")
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    job = scene.flipsketch.jobs[-1]
    key, layer, card = job.key, job.variants[0].layer, job.sequence_object
    folder = Path(bpy.path.abspath(bpy.data.objects[card].data.filepath)).parent
    before = {file.name: file.read_bytes() for file in folder.glob("seq_*.png")}
    scene.flipsketch.seed = 7
    assert bpy.ops.flipsketch.regenerate(key=key) == {"FINISHED"}
    ob.data.layers[layer].name = "Renamed while it ran"
    pump_until_done()
    failed = scene.flipsketch.jobs[-1]
    assert failed.state == "failed" and "no longer exists" in failed.message
    assert {file.name: file.read_bytes() for file in folder.glob("seq_*.png")} == before  # the clip is untouched
    ob.data.layers["Renamed while it ran"].name = layer

    other = bpy.data.scenes.new("Other")
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    window = bpy.context.window_manager.windows[0]
    window.scene = other  # the artist looks at another scene while the job runs
    pump_until_done()
    window.scene = scene
    job = scene.flipsketch.jobs[-1]
    assert job.state == "imported", job.message
    assert [s.name for s in bpy.data.objects[job.sequence_object].users_scene] == [scene.name]

    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    key = scene.flipsketch.jobs[-1].key
    bpy.ops.ed.undo_push(message="The artist draws while the job runs")
    pump_until_done()
    assert runtime.find_job(key).state == "imported"
    bpy.ops.ed.undo()  # back to the drawing step: the row says 'running', but its thread is gone
    job = runtime.find_job(key)
    assert job.state == "failed" and job.message.startswith("Undone"), (job.state, job.message)
    assert bpy.ops.flipsketch.remove_job(key=key) == {"FINISHED"}  # not stuck: it can go
