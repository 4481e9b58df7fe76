"""Operators: Animate Sketch, cancel, new seed, open folder, install backend.

Operators only check, export and hand work to a thread; results come back
through `pump()` on the main thread (a bpy.app.timers callback), where the
import happens as one undo step.
"""

import json
import os
import queue
import random
import tempfile
import time
import uuid
from pathlib import Path

import bpy

from . import backend, importer
from .export import ExportError, Placement, export_drawing
from .preferences import addon_preferences
from .projection import camera_frame, view_frame

PUMP_INTERVAL_S = 0.2
pump_stats = {"longest_ms": 0.0}


def backend_settings(context) -> backend.Settings:
    prefs = addon_preferences(context)
    state_dir = Path(prefs.backend_dir())
    return backend.Settings(
        mode=prefs.backend_mode,
        url=prefs.remote_url,
        token=prefs.remote_token,
        python=prefs.backend_python
        or str(state_dir / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")),
        state_dir=str(state_dir / "server"),
        model=prefs.model,
        subfolder=prefs.model_subfolder,
        device=prefs.device,
    )


def output_root(context) -> tuple[Path, str]:
    """The output folder, and a warning when it had to fall back to a temp folder."""
    configured = addon_preferences(context).output_dir or "//flipsketch/"
    if configured.startswith("//") and not bpy.data.filepath:
        fallback = Path(tempfile.gettempdir()) / "flipsketch"
        return fallback, f"The .blend is not saved: results go to {fallback}. Save the file to keep them beside it."
    return Path(bpy.path.abspath(configured)), ""


def find_job(key: str):
    for scene in bpy.data.scenes:
        for job in scene.flipsketch.jobs:
            if job.key == key:
                return job
    return None


def _import(job, prepared: dict) -> None:
    ob = bpy.data.objects.get(job.object_name)
    if ob is None:
        job.state, job.message = (
            "failed",
            f"The object '{job.object_name}' no longer exists; results are in {job.out_dir}.",
        )
        return
    if job.regenerates:
        layers = importer.replace_segment(job, find_job(job.regenerates), ob, prepared)
    elif job.parent_key:
        layers = importer.import_extension(job, ob, prepared)
    else:
        layers = importer.import_results(job, ob, prepared)
    job.layers = ",".join(layers)
    job.state, job.progress = "imported", 1.0
    bpy.ops.ed.undo_push(message=f"FlipSketch: {job.prompt[:40]}")


def _add_lora(job, folder: str) -> None:
    """A training run is done: its LoRA joins the list new jobs use."""
    added = addon_preferences(bpy.context).add_lora(folder)
    job.state, job.progress = "done", 1.0
    job.message = f"LoRA added to the list: {folder}" if added else f"LoRA trained, in the list already: {folder}"


def pump() -> float:
    """Apply the job threads' messages to bpy data (main thread only)."""
    started = time.perf_counter()
    changed = False
    while True:
        try:
            key, kind, data = backend.messages.get_nowait()
        except queue.Empty:
            break
        if kind == "diagnostics":
            text = bpy.data.texts.get("FlipSketch diagnostics") or bpy.data.texts.new("FlipSketch diagnostics")
            text.from_string(data["text"])
            continue
        job = find_job(key)
        if job is None:
            continue
        changed = True
        if kind == "state":
            job.state = data["state"]
            job.message = data.get("message", "")
            job.backend_id = data.get("backend_id", job.backend_id)
        elif kind == "progress":
            job.stage, job.progress, job.eta = data["stage"], data["fraction"], data.get("eta") or -1
            if data.get("loss") is not None:  # a training step
                job.message = f"Step {data['step']}/{data['total']}, loss {data['loss']:.4g}"
        elif kind == "note":
            job.message = data["message"]
        elif kind == "done":
            try:
                if job.kind == "train":
                    _add_lora(job, data["lora"])
                else:
                    _import(job, data["prepared"])
            except Exception as exc:  # a broken result must not break Blender
                what = "Adding the LoRA to the list" if job.kind == "train" else "Import"
                job.state, job.message = "failed", f"{what} failed: {exc}. Results are in {job.out_dir}."
        if job.shot_name and job.state in ("imported", "failed", "cancelled"):
            from .storyboard import update_shot  # storyboard imports this module

            update_shot(job)
    if changed and bpy.context.window_manager:
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    area.tag_redraw()
    pump_stats["longest_ms"] = max(pump_stats["longest_ms"], (time.perf_counter() - started) * 1000)
    return PUMP_INTERVAL_S


def ensure_pump() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL_S, persistent=True)


class FLIPSKETCH_OT_animate(bpy.types.Operator):
    """Animate the active Grease Pencil drawing at the current frame from the prompt"""

    bl_idname = "flipsketch.animate"
    bl_label = "Animate Sketch"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        ob = context.active_object
        if ob is None or ob.type != "GREASEPENCIL":
            cls.poll_message_set("Select a Grease Pencil object with a drawing")
            return False
        if not context.scene.flipsketch.prompt.strip():
            cls.poll_message_set("Type what should happen in Prompt")
            return False
        return True

    def execute(self, context):
        scene, settings, ob = context.scene, context.scene.flipsketch, context.active_object
        if scene.camera is not None:
            frame = camera_frame(scene, context.evaluated_depsgraph_get())
        elif context.region_data is not None and context.region is not None:
            frame = view_frame(context.region_data, context.region.width, context.region.height)
        else:
            self.report({"ERROR"}, "The scene has no camera and there is no 3D view to look through: add a camera.")
            return {"CANCELLED"}
        try:
            strokes, placement = export_drawing(ob, scene.frame_current, frame, settings.active_layer_only)
        except ExportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        timing = int(settings.timing)
        job = queue_job(
            self, context, ob, {"strokes": strokes}, placement, scene.frame_current, settings.params(), timing
        )
        if job is None:
            return {"CANCELLED"}
        job.camera_name = scene.camera.name if scene.camera else ""
        return {"FINISHED"}


def flipsketch_job_of_layer(context):
    """The imported job whose layer is the active layer of the active object."""
    ob = context.active_object
    if ob is None or ob.type != "GREASEPENCIL" or ob.data.layers.active is None:
        return None
    name = ob.data.layers.active.name
    return next(
        (j for j in context.scene.flipsketch.jobs if j.state == "imported" and name in j.layers.split(",")), None
    )


def flipsketch_job_of_sequence(context):
    """The imported job whose image sequence is the active object."""
    ob = context.active_object
    if ob is None or ob.type != "EMPTY" or ob.empty_display_type != "IMAGE":
        return None
    return next(
        (j for j in context.scene.flipsketch.jobs if j.state == "imported" and j.sequence_object == ob.name), None
    )


class FLIPSKETCH_OT_extend(bpy.types.Operator):
    """Continue a FlipSketch clip from its last drawing: the active FlipSketch layer's last keyframe
    (as generated or redrawn), or the last frame of the active FlipSketch image sequence"""

    bl_idname = "flipsketch.extend"
    bl_label = "Extend"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if flipsketch_job_of_layer(context) is None and flipsketch_job_of_sequence(context) is None:
            cls.poll_message_set("Make a FlipSketch layer the active layer, or select a FlipSketch image sequence")
            return False
        return True

    def execute(self, context):
        settings = context.scene.flipsketch
        parent = flipsketch_job_of_layer(context)
        if parent is not None:  # the layer's last keyframe, as the artist left it
            ob, layer = context.active_object, context.active_object.data.layers.active
            last = max(frame.frame_number for frame in layer.frames)
            placement = Placement(**json.loads(parent.placement))
            try:
                strokes, _ = export_drawing(ob, last, placement.frame(), active_layer_only=True)
            except ExportError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            sketch = {"strokes": strokes}
        else:  # the image sequence's last file
            parent = flipsketch_job_of_sequence(context)
            ob = bpy.data.objects.get(parent.object_name)
            layer = ob.data.layers.get(parent.layers.split(",")[0]) if ob is not None else None
            if layer is None:
                self.report({"ERROR"}, f"The clip's layer '{parent.layers}' is gone; extend from a layer instead.")
                return {"CANCELLED"}
            user = context.active_object.image_user
            last = user.frame_start + user.frame_duration - parent.timing  # where the last drawing starts
            files = sorted(Path(bpy.path.abspath(context.active_object.data.filepath)).parent.glob("seq_*.png"))
            sketch = {"sketch_png": files[user.frame_duration - 1].read_bytes()}
            placement = Placement(**json.loads(parent.placement))
        params = {**settings.params(), "variants": 1, "prompt": settings.prompt.strip() or parent.prompt}
        segment = {"first_index": len(layer.frames)}
        empty = bpy.data.objects.get(parent.sequence_object)
        append_to = None
        if empty is not None and empty.data is not None:  # continue the parent's image sequence
            folder = Path(bpy.path.abspath(empty.data.filepath)).parent
            append_to = (str(folder), empty.image_user.frame_duration + 1)
        job = queue_job(self, context, ob, sketch, placement, last, params, parent.timing, segment, append_to)
        if job is None:
            return {"CANCELLED"}
        job.parent_key, job.layers = parent.key, layer.name
        job.sequence_object, job.camera_name = parent.sequence_object, parent.camera_name
        job.sequence_first = append_to[1] if append_to else 1
        return {"FINISHED"}


class FLIPSKETCH_OT_regenerate(bpy.types.Operator):
    """Generate this segment again with the panel's seed, replacing only its keyframes and frames"""

    bl_idname = "flipsketch.regenerate"
    bl_label = "Regenerate"
    key: bpy.props.StringProperty()

    def execute(self, context):
        settings, old = context.scene.flipsketch, find_job(self.key)
        ob = bpy.data.objects.get(old.object_name) if old else None
        if old is None or old.state != "imported" or ob is None or "," in old.layers:
            self.report({"ERROR"}, "Only an imported single-variant segment whose object exists can be regenerated.")
            return {"CANCELLED"}
        layer = ob.data.layers.get(old.layers)
        if layer is None:
            self.report({"ERROR"}, f"The layer '{old.layers}' is gone: nothing to regenerate into.")
            return {"CANCELLED"}
        placement = Placement(**json.loads(old.placement))
        record = json.loads(bpy.data.texts[f"FlipSketch {old.key}.json"].as_string())["run"]
        params = {k: v for k, v in record["params"].items() if k != "lambda"}
        params["seed"] = settings.seed
        try:  # the same reference as the first time: the drawing at the segment's start
            strokes, _ = export_drawing(ob, old.frame, placement.frame(), only_layer=layer if old.parent_key else None)
        except ExportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        empty = bpy.data.objects.get(old.sequence_object)
        append_to = (str(Path(bpy.path.abspath(empty.data.filepath)).parent), old.sequence_first) if empty else None
        segment = {"first_index": record.get("segment", {}).get("first_index", 0)} if old.parent_key else None
        job = queue_job(
            self, context, ob, {"strokes": strokes}, placement, old.frame, params, old.timing, segment, append_to
        )
        if job is None:
            return {"CANCELLED"}
        job.regenerates, job.parent_key, job.layers = old.key, old.parent_key, old.layers
        job.sequence_object, job.camera_name, job.sequence_first = (
            old.sequence_object,
            old.camera_name,
            old.sequence_first,
        )
        return {"FINISHED"}


def queue_job(op, context, ob, sketch, placement, frame_number, params, timing, segment=None, append_to=None):
    """Check the output folder, add the job to the list and start its thread;
    None (with a report) when it cannot run. `sketch`: {"strokes": …} or {"sketch_png": bytes}."""
    settings = context.scene.flipsketch
    root, warning = output_root(context)
    key = uuid.uuid4().hex[:12]
    out_dir = root / f"{bpy.path.clean_name(ob.name)}_f{frame_number:04d}_{key}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{key}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        op.report({"ERROR"}, f"Cannot write to the output folder {root}: {exc.strerror}. Change it in the preferences.")
        return None
    if warning:
        op.report({"WARNING"}, warning)
    job = settings.jobs.add()
    job.key, job.prompt, job.object_name = key, params["prompt"], ob.name
    job.frame, job.timing, job.out_dir = frame_number, timing, str(out_dir)
    job.placement = json.dumps(placement.to_json())
    prefs = addon_preferences(context)
    request = {"params": params, **sketch}
    if prefs.model:
        request.update(model=prefs.model, subfolder=prefs.model_subfolder or None)
    if segment:
        request["segment"] = segment
    backend.start_job(key, backend_settings(context), request, out_dir, job.timing, append_to)
    ensure_pump()
    return job


class FLIPSKETCH_OT_cancel(bpy.types.Operator):
    """Cancel this job"""

    bl_idname = "flipsketch.cancel"
    bl_label = "Cancel"
    key: bpy.props.StringProperty()

    def execute(self, context):
        if not backend.cancel_job(self.key):
            self.report({"WARNING"}, "That job is not running.")
            return {"CANCELLED"}
        return {"FINISHED"}


class FLIPSKETCH_OT_new_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "flipsketch.new_seed"
    bl_label = "New Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.flipsketch.seed = random.randrange(2**31)
        return {"FINISHED"}


class FLIPSKETCH_OT_open_folder(bpy.types.Operator):
    """Open the job's output folder"""

    bl_idname = "flipsketch.open_folder"
    bl_label = "Open Folder"
    path: bpy.props.StringProperty()

    def execute(self, context):
        if not os.path.isdir(self.path):
            self.report({"ERROR"}, f"{self.path} does not exist (yet).")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=self.path)
        return {"FINISHED"}


class FLIPSKETCH_OT_remove_job(bpy.types.Operator):
    """Remove this job from the list (its files and imported layers stay)"""

    bl_idname = "flipsketch.remove_job"
    bl_label = "Remove Job"
    bl_options = {"REGISTER", "UNDO"}
    key: bpy.props.StringProperty()

    def execute(self, context):
        jobs = context.scene.flipsketch.jobs
        index = next((i for i, job in enumerate(jobs) if job.key == self.key), None)
        if index is None or jobs[index].active:
            self.report({"WARNING"}, "Only finished jobs can be removed.")
            return {"CANCELLED"}
        jobs.remove(index)
        return {"FINISHED"}


_classes = (
    FLIPSKETCH_OT_animate,
    FLIPSKETCH_OT_extend,
    FLIPSKETCH_OT_regenerate,
    FLIPSKETCH_OT_cancel,
    FLIPSKETCH_OT_new_seed,
    FLIPSKETCH_OT_open_folder,
    FLIPSKETCH_OT_remove_job,
)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_classes)


def register() -> None:
    _register_classes()


def unregister() -> None:
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    backend.stop_managed_server()
    _unregister_classes()
