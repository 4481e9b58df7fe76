"""Operators: Animate Sketch, Extend, Regenerate, cancel, new seed, open
folder, remove a job, collect diagnostics.

Operators only check, export and describe the job (runtime.JobSpec); the
runtime adds its row, runs it in a thread and brings its result in.
"""

import json
import os
import random
import subprocess
import threading
from pathlib import Path

import bpy

from . import backend, runtime, versions
from .export import ExportError, Placement, export_drawing
from .gpencil import gp_data
from .job_states import JobKind, JobState
from .preferences import ADDON
from .projection import camera_frame, view_frame
from .runtime import JobSpec


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
        spec = JobSpec(
            kind=JobKind.ANIMATE,
            object_name=ob.name,
            frame=scene.frame_current,
            timing=int(settings.timing),
            params=settings.params(),
            sketch={"strokes": strokes},
            placement=placement,
            camera_name=scene.camera.name if scene.camera else "",
        )
        return {"FINISHED"} if runtime.queue_job(self, context, spec) else {"CANCELLED"}


def _placement(job) -> Placement | None:
    """The job's stored placement, or None when it is missing or unreadable."""
    try:
        return Placement(**json.loads(job.placement))
    except (ValueError, TypeError):
        return None


def _run_record(key: str) -> dict | None:
    """The run record ("run" of the job's text block), or None when it is gone or unreadable."""
    text = bpy.data.texts.get(f"FlipSketch {key}.json")
    try:
        return json.loads(text.as_string())["run"] if text is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def _sequence_folder(empty) -> Path | None:
    """The folder of an image empty's sequence, or None when the empty, its
    image or the folder is gone."""
    if empty is None or empty.data is None or not empty.data.filepath:
        return None
    folder = Path(bpy.path.abspath(empty.data.filepath)).parent
    return folder if folder.is_dir() else None


def _layer_busy(op, object_name: str, layer: str) -> bool:
    """Whether another job will write into the layer (then reported on `op`):
    two at once would both write the same frames."""
    key = runtime.layer_in_use(object_name, layer)
    if key is not None:
        op.report({"ERROR"}, f"Job {key} is still writing into the layer '{layer}': wait for it or cancel it.")
    return key is not None


class FLIPSKETCH_OT_extend(bpy.types.Operator):
    bl_idname = "flipsketch.extend"
    bl_label = "Extend"
    bl_description = (
        "Continue a FlipSketch clip from its last drawing: the active FlipSketch layer's last keyframe "
        "(as generated or redrawn), or the last frame of the active FlipSketch image sequence"
    )
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if runtime.job_of_layer(context) is None and runtime.job_of_sequence(context) is None:
            cls.poll_message_set("Make a FlipSketch layer the active layer, or select a FlipSketch image sequence")
            return False
        return True

    def execute(self, context):
        # Everything needed from the parent's row is read here: adding the new row may move it.
        from_layer = runtime.job_of_layer(context)
        parent = from_layer or runtime.job_of_sequence(context)
        if parent is None:
            self.report({"ERROR"}, "Make a FlipSketch layer active, or select a FlipSketch image sequence.")
            return {"CANCELLED"}
        placement = _placement(parent)
        if placement is None:
            self.report({"ERROR"}, f"The job {parent.key} has lost its placement data: animate the drawing anew.")
            return {"CANCELLED"}
        parent_key, parent_prompt, timing = parent.key, parent.prompt, parent.timing
        sequence_object, camera_name = parent.sequence_object, parent.camera_name
        if from_layer is not None:  # the layer's last keyframe, as the artist left it
            ob, layer = context.active_object, gp_data(context.active_object).layers.active
            drawn = (frame.frame_number for frame in layer.frames if len(frame.drawing.strokes))
            last = max(drawn, default=None)  # not a storyboard clip's empty end keyframe
            if last is None:
                self.report({"ERROR"}, f"The layer '{layer.name}' has no drawings left to continue from.")
                return {"CANCELLED"}
            try:
                strokes, _ = export_drawing(ob, last, placement.frame(), active_layer_only=True)
            except ExportError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            sketch = {"strokes": strokes}
        else:  # the image sequence's last file
            names = parent.layer_names()
            ob = bpy.data.objects.get(parent.object_name)
            layer = ob.data.layers.get(names[0]) if ob is not None and ob.type == "GREASEPENCIL" and names else None
            if layer is None:
                self.report({"ERROR"}, f"The clip's layer '{names[0] if names else ''}' is gone; extend from a layer.")
                return {"CANCELLED"}
            user = context.active_object.image_user
            last = user.frame_start + user.frame_duration - timing  # where the last drawing starts
            folder = _sequence_folder(context.active_object)
            files = sorted(folder.glob("seq_*.png")) if folder is not None else []
            if len(files) < user.frame_duration:
                self.report({"ERROR"}, "The clip's image files are gone: extend from its layer instead.")
                return {"CANCELLED"}
            sketch = {"sketch_png": files[user.frame_duration - 1].read_bytes()}
        if _layer_busy(self, ob.name, layer.name):
            return {"CANCELLED"}
        settings = context.scene.flipsketch
        params = {**settings.params(), "variants": 1, "prompt": settings.prompt.strip() or parent_prompt}
        empty = bpy.data.objects.get(sequence_object)
        folder = _sequence_folder(empty)
        if empty is not None and folder is None:
            self.report({"WARNING"}, f"The image files of '{empty.name}' are gone: only the layer is extended.")
        append_to = (str(folder), empty.image_user.frame_duration + 1) if empty and folder is not None else None
        spec = JobSpec(
            kind=JobKind.EXTEND,
            object_name=ob.name,
            frame=last,
            timing=timing,
            params=params,
            sketch=sketch,
            placement=placement,
            camera_name=camera_name,
            parent_key=parent_key,
            layer=layer.name,
            sequence_object=sequence_object,
            sequence_first=append_to[1] if append_to else 1,
            segment={"first_index": len(layer.frames)},
            append_to=append_to,
        )
        return {"FINISHED"} if runtime.queue_job(self, context, spec) else {"CANCELLED"}


class FLIPSKETCH_OT_regenerate(bpy.types.Operator):
    """Generate this segment again with the panel's seed, replacing only its keyframes and frames"""

    bl_idname = "flipsketch.regenerate"
    bl_label = "Regenerate"
    key: bpy.props.StringProperty(name="Job", description="Key of the job to regenerate", options={"HIDDEN"})

    def execute(self, context):
        # Everything needed from the old row is read here: adding the new row may move it.
        old = runtime.find_job(self.key)
        if old is None or old.state != JobState.IMPORTED or old.kind == JobKind.TRAIN:
            self.report({"ERROR"}, "Only an imported animation can be regenerated: this job is not one.")
            return {"CANCELLED"}
        names = old.layer_names()
        if len(names) != 1:
            self.report({"ERROR"}, "Only a single-variant segment can be regenerated: this job made several.")
            return {"CANCELLED"}
        ob = bpy.data.objects.get(old.object_name)
        if ob is None or ob.type != "GREASEPENCIL":
            self.report({"ERROR"}, f"The object '{old.object_name}' is gone: nothing to regenerate into.")
            return {"CANCELLED"}
        layer = ob.data.layers.get(names[0])
        if layer is None:
            self.report({"ERROR"}, f"The layer '{names[0]}' is gone: nothing to regenerate into.")
            return {"CANCELLED"}
        if _layer_busy(self, ob.name, layer.name):
            return {"CANCELLED"}
        placement, record = _placement(old), _run_record(old.key)
        if placement is None or record is None or "params" not in record:
            self.report(
                {"ERROR"}, f"The text block 'FlipSketch {old.key}.json' or the job's placement is gone: cannot redo it."
            )
            return {"CANCELLED"}
        params = {k: v for k, v in record["params"].items() if k != "lambda"}
        params["seed"], params["variants"] = context.scene.flipsketch.seed, 1  # one segment, the panel's seed
        extension = bool(old.parent_key)
        try:  # the same reference as the first time: the drawing at the segment's start
            strokes, _ = export_drawing(ob, old.frame, placement.frame(), only_layer=layer if extension else None)
        except ExportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        empty = bpy.data.objects.get(old.sequence_object)
        folder = _sequence_folder(empty)
        if empty is not None and folder is None:
            self.report(
                {"ERROR"},
                f"The image sequence '{empty.name}' has lost its image or its files: cannot redo its frames. "
                "Restore them, or delete the image sequence to regenerate the layer alone.",
            )
            return {"CANCELLED"}
        spec = JobSpec(
            kind=JobKind.REGENERATE,
            object_name=ob.name,
            frame=old.frame,
            timing=old.timing,
            params=params,
            sketch={"strokes": strokes},
            placement=placement,
            camera_name=old.camera_name,
            parent_key=old.parent_key,
            regenerates=old.key,
            layer=layer.name,
            sequence_object=old.sequence_object,
            sequence_first=old.sequence_first,
            segment={"first_index": record.get("segment", {}).get("first_index", 0)} if extension else None,
            append_to=(str(folder), old.sequence_first) if folder is not None else None,
        )
        return {"FINISHED"} if runtime.queue_job(self, context, spec) else {"CANCELLED"}


class FLIPSKETCH_OT_cancel(bpy.types.Operator):
    """Cancel this job"""

    bl_idname = "flipsketch.cancel"
    bl_label = "Cancel"
    key: bpy.props.StringProperty(name="Job", description="Key of the job to cancel", options={"HIDDEN"})

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
    path: bpy.props.StringProperty(name="Folder", description="The folder to open", options={"HIDDEN"})

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
    key: bpy.props.StringProperty(name="Job", description="Key of the job to remove", options={"HIDDEN"})

    def execute(self, context):
        jobs = context.scene.flipsketch.jobs
        index = next((i for i, job in enumerate(jobs) if job.key == self.key), None)
        if index is None or jobs[index].active:
            self.report({"WARNING"}, "Only finished jobs can be removed.")
            return {"CANCELLED"}
        jobs.remove(index)
        settings = context.scene.flipsketch
        settings.job_index = min(settings.job_index, len(jobs) - 1)
        return {"FINISHED"}


class FLIPSKETCH_OT_diagnostics(bpy.types.Operator):
    """Collect what is needed to report a problem into the text block 'FlipSketch diagnostics'"""

    bl_idname = "flipsketch.diagnostics"
    bl_label = "Collect Diagnostics"

    def execute(self, context):
        settings = runtime.backend_settings(context)
        report = [
            f"Blender {bpy.app.version_string} ({versions.support(bpy.app.version)}), add-on {ADDON}",
            f"FlipSketch is {versions.summary()}",
            f"backend: {settings.mode} {settings.url if settings.mode == 'REMOTE' else settings.python}",
            f"model: {settings.model} {settings.subfolder}, device: {settings.device}",
        ]
        log = Path(settings.state_dir) / "server.log"

        def work() -> None:
            lines = list(report)
            if Path(settings.python).is_file():
                doctor = subprocess.run(
                    [settings.python, "-m", "flipsketch.cli", "doctor"], capture_output=True, text=True, timeout=300
                )
                lines += ["", "flipsketch doctor:", doctor.stdout + doctor.stderr]
            else:
                lines += ["", f"backend not installed ({settings.python} missing)"]
            if log.is_file():
                lines += ["", f"last lines of {log}:", *log.read_text(errors="replace").splitlines()[-40:]]
            backend.messages.put(("", "diagnostics", {"text": "\n".join(lines)}))

        threading.Thread(target=work, daemon=True).start()
        runtime.ensure_pump()
        self.report({"INFO"}, "Collecting diagnostics into the text block 'FlipSketch diagnostics'…")
        return {"FINISHED"}


_classes = (
    FLIPSKETCH_OT_animate,
    FLIPSKETCH_OT_extend,
    FLIPSKETCH_OT_regenerate,
    FLIPSKETCH_OT_cancel,
    FLIPSKETCH_OT_new_seed,
    FLIPSKETCH_OT_open_folder,
    FLIPSKETCH_OT_remove_job,
    FLIPSKETCH_OT_diagnostics,
)


register, unregister = bpy.utils.register_classes_factory(_classes)
