"""Storyboards: a shot list (from timeline markers) animated in one go.

Each shot is an ordinary Animate Sketch job on the shot's drawing at its
first frame. State lives in the .blend (shot states, job list), so after
Blender is closed and reopened, Animate Storyboard runs only the shots that
are not done: nothing is done twice, nothing is lost.
"""

import json
import struct
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from . import backend, runtime
from .export import ExportError, Placement, export_drawing, scene_at
from .job_states import ACTIVE_STATES, JobKind
from .projection import camera_frame
from .properties import scene_settings
from .runtime import JobSpec


def shot_ranges(scene) -> list[tuple[str, int, int]]:
    """(name, start, end) from markers: each marker to the frame before the next."""
    markers = sorted(scene.timeline_markers, key=lambda m: m.frame)
    if not markers:
        return []
    ends = [m.frame - 1 for m in markers[1:]] + [max(scene.frame_end, markers[-1].frame)]
    return [(m.name, m.frame, end) for m, end in zip(markers, ends, strict=True)]


KEPT = (  # what a shot keeps when Shots from Markers runs again
    "object_name",
    "prompt",
    "frames",
    "motion",
    "seed",
    "variants",
    "state",
    "message",
    "job_key",
    "previous_job_key",
)


def _matching_shot(old: list[dict], name: str, start: int) -> dict | None:
    """The values of the old shot a marker's shot continues, taken out of
    `old`: the same name and start, else the same name (a moved marker), else
    the same start (a renamed one); None for a new marker. Markers may share
    a name (Shift+D keeps it), so each old shot serves once."""
    for same in (
        lambda s: s["name"] == name and s["frame_start"] == start,
        lambda s: s["name"] == name,
        lambda s: s["frame_start"] == start,
    ):
        found = next((s for s in old if same(s)), None)
        if found is not None:
            old.remove(found)
            return found
    return None


class FLIPSKETCH_OT_shots_from_markers(bpy.types.Operator):
    """Make one shot per timeline marker (marker to next marker), keeping prompts of existing shots"""

    bl_idname = "flipsketch.shots_from_markers"
    bl_label = "Shots from Markers"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene, settings = context.scene, context.scene.flipsketch
        ranges = shot_ranges(scene)
        if not ranges:
            self.report({"ERROR"}, "The timeline has no markers: add one marker at the start of each shot (M).")
            return {"CANCELLED"}
        old = [
            {"name": s.name, "frame_start": s.frame_start, **{k: getattr(s, k) for k in KEPT}} for s in settings.shots
        ]
        ob = context.active_object
        default_object = ob.name if ob is not None and ob.type == "GREASEPENCIL" else ""
        settings.shots.clear()
        for name, start, end in ranges:
            values = _matching_shot(old, name, start) or {"object_name": default_object}
            shot = settings.shots.add()
            shot.name, shot.frame_start, shot.frame_end = name, start, end
            for key in KEPT:
                if key in values:
                    setattr(shot, key, values[key])
        return {"FINISHED"}


class FLIPSKETCH_OT_animate_storyboard(bpy.types.Operator):
    """Animate every shot that is not done yet (all of them with Force)"""

    bl_idname = "flipsketch.animate_storyboard"
    bl_label = "Animate Storyboard"
    bl_options = {"REGISTER"}
    force: bpy.props.BoolProperty(name="Force", description="Also redo shots that are done")

    @classmethod
    def poll(cls, context):
        if not context.scene.flipsketch.shots:
            cls.poll_message_set("Make shots first (Shots from Markers)")
            return False
        if context.scene.camera is None:
            cls.poll_message_set("A storyboard needs a scene camera")
            return False
        return True

    def execute(self, context):
        settings = context.scene.flipsketch
        queued = failed = fitted = 0
        for shot in settings.shots:
            if shot.state == "queued" or (shot.state == "done" and not self.force):
                continue
            shot.message = ""
            reason = self.queue_shot(context, shot)
            shot.state, shot.message = ("failed", reason) if reason else ("queued", shot.message)
            failed += bool(reason)
            queued += not reason
            fitted += bool(not reason and shot.message)
        note = f", {fitted} shortened to fit their range" if fitted else ""
        self.report(
            {"WARNING" if failed or fitted else "INFO"}, f"{queued} shot(s) queued{note}, {failed} could not start."
        )
        return {"FINISHED"}

    def queue_shot(self, context, shot) -> str:
        """Start one shot's job; the reason it cannot start, or ''. A clip
        longer than the shot is shortened to fit (noted in shot.message)."""
        scene, settings = context.scene, context.scene.flipsketch
        ob = bpy.data.objects.get(shot.object_name)
        if ob is None or ob.type != "GREASEPENCIL":
            return f"Shot {shot.name}: choose its Grease Pencil drawing."
        if not shot.prompt.strip():
            return f"Shot {shot.name}: type a prompt."
        params, timing = settings.shot_params(shot), int(settings.timing)
        frames, reason = fit_to_shot(shot, params["frames"], timing)
        if reason:
            return reason
        if frames != params["frames"]:
            shot.message = (
                f"{params['frames']} drawings on {timing}s do not fit in {shot_length(shot)} frames: {frames} are made."
            )
            params["frames"] = frames
        with scene_at(scene, shot.frame_start):  # also switches marker-bound cameras; the playhead comes back
            try:
                frame = camera_frame(scene, context.evaluated_depsgraph_get())
                strokes, placement = export_drawing(ob, shot.frame_start, frame)
            except ExportError as exc:
                return f"Shot {shot.name}: {exc}"
            camera_name = scene.camera.name
        spec = JobSpec(
            kind=JobKind.ANIMATE,
            object_name=ob.name,
            frame=shot.frame_start,
            timing=timing,
            params=params,
            sketch={"strokes": strokes},
            placement=placement,
            camera_name=camera_name,
            shot_name=shot.name,
        )
        key = runtime.queue_job(self, context, spec)
        if key is None:
            return f"Shot {shot.name}: the output folder is not writable."
        shot.previous_job_key, shot.job_key = shot.job_key, key  # a redone shot's old clip is hidden once it is in
        return ""


MIN_DRAWINGS = 2  # the fewest drawings a job makes


def shot_length(shot) -> int:
    """Frames in the shot's range, both ends included."""
    return shot.frame_end - shot.frame_start + 1


def fit_to_shot(shot, frames: int, timing: int) -> tuple[int, str]:
    """How many drawings held `timing` frames each fit in the shot: `frames`
    or fewer; (0, reason) when not even MIN_DRAWINGS fit."""
    fitting = shot_length(shot) // timing
    if fitting < MIN_DRAWINGS:
        return 0, (
            f"Shot {shot.name} is {shot_length(shot)} frame(s) long: {MIN_DRAWINGS} drawings on {timing}s do not fit. "
            "Lengthen the shot (move the next marker) or use a shorter Timing."
        )
    return min(frames, fitting), ""


def end_clip(job, shot) -> str:
    """Make the shot's clip stop at the shot's end: an empty keyframe right
    after it on the job's layers, and its image card shown only inside the
    shot (keyed visibility). A note when the clip runs past the end, else ''."""
    ob = bpy.data.objects.get(job.object_name)
    end = shot.frame_end + 1
    if ob is not None:
        for name in job.layer_names():
            layer = ob.data.layers.get(name)
            if layer is None:
                continue
            if any(frame.frame_number >= end for frame in layer.frames):  # pyright: ignore[reportGeneralTypeIssues]  the stubs' collection get() returns None, not the item
                return f"The clip on '{name}' runs past the shot's end (frame {shot.frame_end}): shorten it by hand."
            layer.frames.new(end)  # an empty drawing: nothing of this clip shows after the shot
    empty = bpy.data.objects.get(job.sequence_object)
    if empty is not None:
        shown = not empty.hide_viewport
        for frame, hidden in ((shot.frame_start - 1, True), (shot.frame_start, not shown), (end, True)):
            empty.hide_viewport = empty.hide_render = hidden
            empty.keyframe_insert("hide_viewport", frame=frame)
            empty.keyframe_insert("hide_render", frame=frame)
        empty.hide_viewport = empty.hide_render = not shown
    return ""


def hide_clip(job) -> None:
    """Hide a clip that a redone shot replaces (its layers and its image card,
    whose keyed visibility is removed); nothing is deleted."""
    ob = bpy.data.objects.get(job.object_name)
    if ob is not None and ob.type == "GREASEPENCIL":
        for name in job.layer_names():
            layer = ob.data.layers.get(name)
            if layer is not None:
                layer.hide = True
    card = bpy.data.objects.get(job.sequence_object)
    if card is not None:
        card.animation_data_clear()
        card.hide_viewport = card.hide_render = True


def update_shot(job) -> None:
    """The shot of a job that ended follows it (a runtime.on_job_end listener)."""
    if not job.shot_name:
        return
    scene_shots = (s for scene in bpy.data.scenes for s in scene_settings(scene).shots)
    shot = next((s for s in scene_shots if s.job_key == job.key), None)
    if shot is None:
        return
    if job.state == "imported":
        shot.state, shot.message = "done", end_clip(job, shot) or shot.message
        previous = runtime.find_job(shot.previous_job_key)
        if previous is not None and previous.state == "imported":
            hide_clip(previous)
    elif job.state == "cancelled":  # not done: the next Animate Storyboard runs it
        shot.state, shot.message = "todo", "Cancelled."
    elif job.state == "failed":
        shot.state, shot.message = "failed", job.message


def _orphaned(message: str) -> None:
    """Rows of jobs whose thread is gone fail (runtime.orphaned_rows), and
    shots queued on a job that is no longer active go back to do."""
    runtime.orphaned_rows(message)
    for scene in bpy.data.scenes:
        for shot in scene_settings(scene).shots:
            job = runtime.find_job(shot.job_key)
            if shot.state == "queued" and (job is None or job.state not in ACTIVE_STATES):
                shot.state, shot.message = "todo", message


@persistent
def interrupted_on_load(_file) -> None:
    """Jobs that were running when the file was saved cannot be followed after
    a restart: mark them, and put their shots back to do."""
    _orphaned("Interrupted: Blender was closed while it ran.")


@persistent
def interrupted_by_undo(_scene, _data=None) -> None:
    """An undo or redo brings rows back as they were: one that says a job is
    active after its thread has finished (its import undone) is marked, and
    its shot goes back to do."""
    _orphaned("Undone: its import was undone, so it is not in the scene; run it again.")


class FLIPSKETCH_OT_cancel_storyboard(bpy.types.Operator):
    """Cancel every storyboard shot that is queued or running"""

    bl_idname = "flipsketch.cancel_storyboard"
    bl_label = "Cancel Storyboard"

    def execute(self, context):
        cancelled = sum(
            backend.cancel_job(shot.job_key) for shot in context.scene.flipsketch.shots if shot.state == "queued"
        )
        self.report({"INFO"}, f"Cancelling {cancelled} shot(s).")
        return {"FINISHED"}


class FLIPSKETCH_OT_storyboard_to_sequencer(bpy.types.Operator):
    """Add every finished shot to the Video Sequencer: its frames at its range, its name as a caption"""

    bl_idname = "flipsketch.storyboard_to_sequencer"
    bl_label = "Animatic in Sequencer"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene = context.scene
        editor = scene.sequence_editor or scene.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # 4.5 has both; 5.0 only strips
        added = 0
        for shot in scene.flipsketch.shots:
            job = runtime.find_job(shot.job_key) if shot.state == "done" else None
            files = sorted(runtime.best_sequence_folder(job).glob("seq_*.png")) if job else []
            if not files:
                continue
            start, length = shot.frame_start, shot_length(shot)
            channel = free_channels(strips, start, start + length)
            strip = strips.new_image(f"{shot.name}", str(files[0]), channel, start, fit_method="ORIGINAL")
            strip.transform.scale_x = strip.transform.scale_y = frame_fill(job, files[0], scene.render)
            for file in files[1:]:
                strip.elements.append(file.name)
            strip.frame_final_duration = length  # the last drawing holds to the shot's end, never past it
            try:
                caption = strips.new_effect(
                    f"{shot.name} caption", "TEXT", channel + 1, start, frame_end=start + length
                )
            except TypeError:  # Blender 5.0 takes a length
                caption = strips.new_effect(f"{shot.name} caption", "TEXT", channel + 1, start, length=length)
            caption.text, caption.font_size, caption.location = shot.name, 40, (0.05, 0.92)
            added += 1
        if not added:
            self.report({"ERROR"}, "No finished shots yet: run Animate Storyboard first.")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{added} shot(s) added to the Sequencer; render the animation to get the animatic.")
        return {"FINISHED"}


def frame_fill(job, first_file: Path, render) -> float:
    """The scale at which the camera frame inside a job's square images (as it
    was letterboxed at job time) covers the render frame now, centred: the
    frame fills it as the camera showed it, even after the render size changed."""
    with open(first_file, "rb") as png:
        side = struct.unpack(">I", png.read(24)[16:20])[0]  # the PNG header's width; the images are square
    frame_w, frame_h = Placement(**json.loads(job.placement)).frame().extent
    return max(render.resolution_x / (side * frame_w), render.resolution_y / (side * frame_h))


def free_channels(strips, start: int, end: int) -> int:
    """The lowest channel c such that channels c and c + 1 hold no strip
    overlapping frames [start, end)."""
    used = {strip.channel for strip in strips if strip.frame_final_start < end and strip.frame_final_end > start}
    channel = 1
    while channel in used or channel + 1 in used:
        channel += 1
    return channel


class FLIPSKETCH_UL_shots(bpy.types.UIList):
    def draw_item(self, context, layout, data, shot, icon, active_data, active_property, index):
        icons = {"done": "CHECKMARK", "failed": "ERROR", "queued": "TIME", "todo": "BLANK1"}
        row = layout.row(align=True)
        row.label(text=f"{shot.name} {shot.frame_start}-{shot.frame_end}", icon=icons.get(shot.state, "BLANK1"))
        row.prop(shot, "prompt", text="", emboss=True)


class FLIPSKETCH_PT_storyboard(bpy.types.Panel):
    bl_label = "Storyboard"
    bl_idname = "FLIPSKETCH_PT_storyboard"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlipSketch"
    bl_parent_id = "FLIPSKETCH_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout, settings = self.layout, context.scene.flipsketch
        layout.operator("flipsketch.shots_from_markers", icon="MARKER_HLT")
        layout.template_list("FLIPSKETCH_UL_shots", "", settings, "shots", settings, "shot_index", rows=4)
        if settings.shots and 0 <= settings.shot_index < len(settings.shots):
            shot = settings.shots[settings.shot_index]
            box = layout.box()
            box.prop_search(shot, "object_name", bpy.data, "objects")
            row = box.row(align=True)
            row.prop(shot, "frame_start")
            row.prop(shot, "frame_end")
            row = box.row(align=True)
            row.prop(shot, "frames")
            row.prop(shot, "motion")
            row.prop(shot, "seed")
            row.prop(shot, "variants")
            if shot.message:
                box.label(text=shot.message, icon="ERROR")
        done = sum(shot.state == "done" for shot in settings.shots)
        if settings.shots:
            layout.progress(factor=done / len(settings.shots), text=f"{done} of {len(settings.shots)} shots done")
        row = layout.row(align=True)
        row.operator("flipsketch.animate_storyboard", icon="SEQUENCE")
        row.operator("flipsketch.animate_storyboard", text="Force All").force = True
        row.operator("flipsketch.cancel_storyboard", text="", icon="CANCEL")
        layout.operator("flipsketch.storyboard_to_sequencer", icon="SEQ_SEQUENCER")


_classes = (
    FLIPSKETCH_OT_shots_from_markers,
    FLIPSKETCH_OT_animate_storyboard,
    FLIPSKETCH_OT_cancel_storyboard,
    FLIPSKETCH_OT_storyboard_to_sequencer,
    FLIPSKETCH_UL_shots,
    FLIPSKETCH_PT_storyboard,
)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_classes)


def register() -> None:
    _register_classes()
    bpy.app.handlers.load_post.append(interrupted_on_load)
    bpy.app.handlers.undo_post.append(interrupted_by_undo)
    bpy.app.handlers.redo_post.append(interrupted_by_undo)
    runtime.on_job_end.append(update_shot)


def unregister() -> None:
    runtime.on_job_end.remove(update_shot)
    bpy.app.handlers.redo_post.remove(interrupted_by_undo)
    bpy.app.handlers.undo_post.remove(interrupted_by_undo)
    bpy.app.handlers.load_post.remove(interrupted_on_load)
    _unregister_classes()
