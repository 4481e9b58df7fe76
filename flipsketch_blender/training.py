"""Training a sketch-style LoRA on one's own animation.

Export Animation for Training writes a Grease Pencil layer's animation as a
clip for the backend's sketch-style LoRA trainer; Train LoRA trains a LoRA on
a folder of clips as a job of the backend (in the job list, with progress and
Cancel) and adds it to the preferences' LoRA list when it is done.

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

from . import runtime
from .export import ExportError, export_drawing
from .gpencil import gp_data
from .job_states import JobKind
from .preferences import addon_preferences
from .projection import camera_frame
from .properties import scene_settings

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
    bl_idname = "flipsketch.export_training_clip"
    bl_label = "Export Animation for Training"
    bl_description = (
        "Export the active Grease Pencil layer's animation, seen through the scene camera, "
        "as a clip (drawings + caption) for training a sketch-style LoRA"
    )
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
        if ob is None or ob.type != "GREASEPENCIL" or gp_data(ob).layers.active is None:
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
        job = runtime.job_of_layer(context)
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
            drawings = export_frames(context, ob, gp_data(ob).layers.active, frames)
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


class FLIPSKETCH_OT_train_lora(bpy.types.Operator):
    bl_idname = "flipsketch.train_lora"
    bl_label = "Train LoRA"
    bl_description = (
        "Train a sketch-style LoRA on the clips of a data folder, in the background on the backend; "
        "when it is done, the LoRA joins the list that every new job uses"
    )
    bl_options = {"REGISTER"}

    data_dir: bpy.props.StringProperty(
        name="Data folder",
        subtype="DIR_PATH",
        description="Folder of training clips, as Export Animation for Training writes them",
        options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    name: bpy.props.StringProperty(
        name="Name", description="The LoRA's name: its folder in the preferences' LoRA folder", options={"SKIP_SAVE"}
    )
    steps: bpy.props.IntProperty(name="Steps", default=1000, min=1, max=1_000_000, description="Training steps")
    rank: bpy.props.IntProperty(
        name="Rank", default=16, min=1, max=512, description="Size of the LoRA: higher learns more, needs more data"
    )
    resolution: bpy.props.IntProperty(
        name="Resolution", default=256, min=64, max=1024, step=8, description="Training size in pixels (256: trained)"
    )
    frames: bpy.props.IntProperty(
        name="Frames", default=16, min=2, max=32, description="Frames per training sample; every clip needs this many"
    )
    validation_steps: bpy.props.IntProperty(
        name="Validation steps",
        default=25,
        min=0,
        max=200,
        description="Denoising steps of the preview animation made at the end (0: no preview)",
    )
    resume: bpy.props.BoolProperty(
        name="Resume",
        description="Continue the earlier run in the LoRA's folder from its last checkpoint",
        options={"SKIP_SAVE"},
    )
    overwrite: bpy.props.BoolProperty(
        name="Overwrite", description="Start over, replacing an earlier run in the LoRA's folder", options={"SKIP_SAVE"}
    )

    def fill_defaults(self, context) -> None:
        """The preference's data folder, and that folder's name as the LoRA's."""
        if not self.properties.is_property_set("data_dir"):
            self.data_dir = addon_preferences(context).training_data_dir
        if not self.properties.is_property_set("name"):
            self.name = Path(self.data_dir.strip().rstrip("/\\")).name

    def invoke(self, context, event):
        self.fill_defaults(context)
        return context.window_manager.invoke_props_dialog(self, width=420, confirm_text="Train")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "data_dir")
        layout.prop(self, "name")
        if self.lora_name():
            out = self.lora_folder(context)
            layout.label(text=f"Into {out}", icon="FILE_FOLDER")
            earlier = (os.path.join(out, name) for name in ("adapter_model.safetensors", "checkpoints"))
            if self.is_local(context) and any(map(os.path.exists, earlier)):
                layout.label(text="It holds an earlier run: tick Resume or Overwrite.", icon="ERROR")
        column = layout.column(align=True)
        for prop in ("steps", "rank", "resolution", "frames", "validation_steps"):
            column.prop(self, prop)
        row = layout.row()
        row.prop(self, "resume")
        row.prop(self, "overwrite")

    def lora_name(self) -> str:
        name = self.name.strip()
        return bpy.path.clean_name(name) if name else ""

    @staticmethod
    def is_local(context) -> bool:
        """The managed server runs here: its folders are this machine's."""
        return addon_preferences(context).backend_mode == "LOCAL"

    def server_path(self, context, path: str) -> str:
        """A folder as the server sees it: blend-relative paths made absolute; '~'
        expanded here for the managed local server, by the server when remote."""
        path = bpy.path.abspath(path.strip())
        return os.path.normpath(os.path.expanduser(path)) if self.is_local(context) else path.rstrip("/\\")

    def lora_folder(self, context) -> str:
        root = self.server_path(context, addon_preferences(context).lora_dir)
        return root + (os.sep if self.is_local(context) else "/") + self.lora_name()

    def problem(self, context, data: str, out: str) -> str:
        """Why the run cannot start, or ''."""
        if not self.data_dir.strip():
            return "Choose the training data folder: a folder of clips from Export Animation for Training."
        if not self.lora_name():
            return "Type a name for the LoRA: it names the LoRA's folder."
        if not addon_preferences(context).lora_dir.strip():
            return "Set the LoRA folder in the add-on preferences: trained LoRAs are written there."
        if self.resume and self.overwrite:
            return "Tick Resume (continue the earlier run) or Overwrite (start over), not both."
        if self.resolution % 8:
            return f"The resolution {self.resolution} is not a multiple of 8: use 256, or e.g. 128, 384, 512."
        if self.is_local(context) and not os.path.isdir(data):
            return (
                f"The training data folder {data} does not exist: export clips into it with "
                "Export Animation for Training, or choose another folder."
            )
        jobs = (job for scene in bpy.data.scenes for job in scene_settings(scene).jobs)
        if any(job.kind == JobKind.TRAIN and job.active and job.out_dir == out for job in jobs):
            return f"The LoRA {out} is being trained already: wait for that run, or cancel it."
        return ""

    def execute(self, context):
        self.fill_defaults(context)
        data, out = self.server_path(context, self.data_dir), self.lora_folder(context)
        problem = self.problem(context, data, out)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        config = {
            "steps": self.steps,
            "rank": self.rank,
            "resolution": self.resolution,
            "frames": self.frames,
            "validation_steps": self.validation_steps,
        }
        runtime.queue_training(context, self.lora_name(), data, out, config, self.resume, self.overwrite)
        self.report({"INFO"}, f"Training the LoRA {self.lora_name()} into {out}; follow it in the job list.")
        return {"FINISHED"}


_classes = (FLIPSKETCH_OT_export_training_clip, FLIPSKETCH_OT_train_lora)

register, unregister = bpy.utils.register_classes_factory(_classes)
