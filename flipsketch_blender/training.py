"""Export Animation for Training: a Grease Pencil layer's animation as a clip
for the backend's sketch-style LoRA trainer.

A clip is the folder `<data folder>/<clip name>/` holding `frame_0001.json`,
`frame_0002.json`, … (one flipsketch.strokes drawing per exported frame,
numbered from 1, projected exactly like the drawings jobs send) and
`caption.txt` (the caption, one line). It is written into a hidden sibling
folder and renamed into place at the end, so a failed export never leaves a
partial clip for the trainer to pick up.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import bpy

from .export import ExportError, export_drawing
from .operators import flipsketch_job_of_layer
from .preferences import addon_preferences
from .projection import camera_frame

CAPTION_FILE = "caption.txt"


def export_frames(context, ob, layer, frames: range) -> list[dict]:
    """The layer's drawing at each frame, through the scene camera as it is at
    that frame (it may move); the ExportError of the first bad frame names it."""
    scene = context.scene
    current = scene.frame_current
    drawings = []
    try:
        for number in frames:
            scene.frame_set(number)
            frame = camera_frame(scene, context.evaluated_depsgraph_get())
            try:
                drawings.append(export_drawing(ob, number, frame, only_layer=layer)[0])
            except ExportError as exc:
                raise ExportError(f"Frame {number}: {exc}") from None
    finally:
        scene.frame_set(current)
    return drawings


def write_clip(folder: Path, drawings: list[dict], caption: str) -> None:
    """Write the clip beside `folder` and rename it into place, replacing an
    existing `folder`; on any failure nothing new is left behind."""
    token = uuid.uuid4().hex[:8]
    partial = folder.with_name(f".{folder.name}.partial-{token}")
    replaced = folder.with_name(f".{folder.name}.replaced-{token}")
    partial.mkdir(parents=True)
    try:
        for number, drawing in enumerate(drawings, start=1):
            (partial / f"frame_{number:04d}.json").write_text(json.dumps(drawing), encoding="utf-8")
        (partial / CAPTION_FILE).write_text(caption + "\n", encoding="utf-8")
        if folder.exists():
            folder.rename(replaced)
        partial.rename(folder)
    except Exception:
        shutil.rmtree(partial, ignore_errors=True)
        if replaced.exists() and not folder.exists():
            replaced.rename(folder)
        raise
    shutil.rmtree(replaced, ignore_errors=True)


class FLIPSKETCH_OT_export_training_clip(bpy.types.Operator):
    """Export the active Grease Pencil layer's animation, seen through the scene camera,
    as a clip (drawings + caption) for training a sketch-style LoRA"""

    bl_idname = "flipsketch.export_training_clip"
    bl_label = "Export Animation for Training"
    bl_options = {"REGISTER"}

    directory: bpy.props.StringProperty(
        name="Data folder",
        subtype="DIR_PATH",
        description="The training data folder",
        options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    clip_name: bpy.props.StringProperty(
        name="Clip name", description="The clip's folder name in the data folder", options={"SKIP_SAVE"}
    )
    caption: bpy.props.StringProperty(
        name="Caption", description="What happens and how it is drawn, as a prompt would say it", options={"SKIP_SAVE"}
    )
    frame_start: bpy.props.IntProperty(name="Start", description="First frame to export", options={"SKIP_SAVE"})
    frame_end: bpy.props.IntProperty(name="End", description="Last frame to export", options={"SKIP_SAVE"})
    step: bpy.props.IntProperty(name="Step", default=1, min=1, description="Export every step-th frame")
    overwrite: bpy.props.BoolProperty(
        name="Overwrite", description="Replace an existing clip of the same name", options={"SKIP_SAVE"}
    )

    @classmethod
    def poll(cls, context):
        ob = context.active_object
        if ob is None or ob.type != "GREASEPENCIL" or ob.data.layers.active is None:
            cls.poll_message_set("Select a Grease Pencil object and make its animated layer active")
            return False
        if context.scene.camera is None:
            cls.poll_message_set("Add a scene camera: the training drawings are seen through it")
            return False
        return True

    def fill_defaults(self, context) -> None:
        """Defaults for what the caller left unset: the scene's range, the
        preference's folder, object + layer as the name, and the prompt that
        generated the layer (if FlipSketch made it) as the caption."""
        ob, scene = context.active_object, context.scene
        job = flipsketch_job_of_layer(context)
        defaults = {
            "directory": addon_preferences(context).training_data_dir,
            "clip_name": bpy.path.clean_name(f"{ob.name}_{ob.data.layers.active.name}"),
            "caption": job.prompt if job else "",
            "frame_start": scene.frame_start,
            "frame_end": scene.frame_end,
        }
        for name, value in defaults.items():
            if not self.properties.is_property_set(name):
                setattr(self, name, value)

    def invoke(self, context, event):
        self.fill_defaults(context)
        return context.window_manager.invoke_props_dialog(self, width=420, confirm_text="Export")

    def clip_folder(self) -> Path:
        root = os.path.expanduser(bpy.path.abspath(self.directory.strip()))
        return Path(root) / bpy.path.clean_name(self.clip_name.strip())

    def problem(self, caption: str) -> str:
        """Why the export cannot start, or ''."""
        if not caption:
            return "Type a caption: the trainer learns the style from the drawings with it (e.g. 'a cat jumps')."
        if not self.clip_name.strip():
            return "Type a clip name: it names the clip's folder in the data folder."
        if not self.directory.strip():
            return "Choose a data folder for the clip (the default is in the add-on preferences)."
        if self.frame_end < self.frame_start:
            return f"The range {self.frame_start}-{self.frame_end} is empty: make End at least Start."
        folder = self.clip_folder()
        if folder.exists() and not self.overwrite:
            return f"The clip {folder} exists already: choose another clip name, or tick Overwrite to replace it."
        if folder.exists() and not (folder / CAPTION_FILE).is_file():
            return f"{folder} is not a training clip (no {CAPTION_FILE}), so it is not replaced: choose another name."
        return ""

    def execute(self, context):
        self.fill_defaults(context)
        caption = " ".join(self.caption.split())  # one line
        problem = self.problem(caption)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        ob = context.active_object
        frames = range(self.frame_start, self.frame_end + 1, self.step)
        try:
            drawings = export_frames(context, ob, ob.data.layers.active, frames)
        except ExportError as exc:
            self.report({"ERROR"}, f"Nothing was exported. {exc}")
            return {"CANCELLED"}
        folder = self.clip_folder()
        try:
            write_clip(folder, drawings, caption)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot write the clip {folder}: {exc}. Choose another data folder.")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(drawings)} frames to {folder}")
        return {"FINISHED"}


_classes = (FLIPSKETCH_OT_export_training_clip,)

register, unregister = bpy.utils.register_classes_factory(_classes)
