"""Scene settings for the sidebar and the list of jobs (saved with the .blend)."""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .preferences import addon_preferences

TIMINGS = [("1", "Ones", "A new drawing every frame"), ("2", "Twos", "Hold each drawing 2 frames"), ("3", "Threes", "")]
ACTIVE_STATES = {"starting", "connecting", "queued", "running", "downloading"}


class FLIPSKETCH_PG_job(bpy.types.PropertyGroup):
    key: StringProperty()
    kind: StringProperty(default="animate")  # animate | train (out_dir is then the LoRA folder)
    prompt: StringProperty()
    state: StringProperty(default="starting")
    stage: StringProperty()
    message: StringProperty()
    progress: FloatProperty(min=0, max=1, subtype="FACTOR")
    eta: FloatProperty(default=-1)
    backend_id: StringProperty()
    out_dir: StringProperty(subtype="DIR_PATH")
    object_name: StringProperty()
    camera_name: StringProperty()
    frame: IntProperty()
    timing: IntProperty(default=2)
    placement: StringProperty()  # JSON: where results go back (export.Placement)
    shot_name: StringProperty()  # set when the job animates a storyboard shot
    layers: StringProperty()  # names of the imported layers, comma separated
    sequence_object: StringProperty()  # the image empty showing the first variant
    parent_key: StringProperty()  # set for an extension: the job it continues
    regenerates: StringProperty()  # set for a regeneration: the job whose segment it replaces
    first_key: IntProperty()  # first keyframe this job wrote on its layer
    key_count: IntProperty()  # how many keyframes it wrote
    sequence_first: IntProperty(default=1)  # number of its first file in the image sequence

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class FLIPSKETCH_PG_shot(bpy.types.PropertyGroup):
    """One storyboard shot: a frame range, its drawing, a prompt, overrides."""

    name: StringProperty(name="Name")
    frame_start: IntProperty(name="Start")
    frame_end: IntProperty(name="End")
    object_name: StringProperty(name="Drawing", description="Grease Pencil object drawn at the shot's first frame")
    prompt: StringProperty(name="Prompt")
    frames: IntProperty(name="Frames", default=0, min=0, max=32, description="0: the panel's setting")
    motion: FloatProperty(name="Motion", default=-1, min=-1, max=1, description="-1: the panel's setting")
    seed: IntProperty(name="Seed", default=-1, min=-1, description="-1: the panel's setting")
    variants: IntProperty(name="Variants", default=0, min=0, max=8, description="0: the panel's setting")
    state: StringProperty(default="todo")  # todo | queued | done | failed
    message: StringProperty()
    job_key: StringProperty()


class FLIPSKETCH_PG_settings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What should happen, e.g. 'the cat turns its head and meows'")
    negative_prompt: StringProperty(name="Negative prompt")
    motion: FloatProperty(
        name="Motion", default=0.5, min=0, max=1, subtype="FACTOR", description="More motion, or closer to the drawing"
    )
    frames: IntProperty(name="Frames", default=10, min=2, max=32, description="Drawings to generate (trained on 16)")
    timing: EnumProperty(name="Timing", items=TIMINGS, default="2")
    seed: IntProperty(name="Seed", default=0, min=0)
    variants: IntProperty(name="Variants", default=1, min=1, max=8, description="Seeds seed, seed+1, … in one job")
    steps: IntProperty(name="Steps", default=25, min=1, max=200)
    guidance: FloatProperty(name="Guidance", default=9.0, min=0, max=30)
    align: BoolProperty(name="Frame alignment", default=True, description="Paper's full method; several times slower")
    tau_align: IntProperty(name="Align steps (τ1)", default=10, min=0, max=200)
    tau_compose: IntProperty(name="Compose steps (τ2)", default=15, min=-1, max=200)
    resolution: EnumProperty(
        name="Resolution", items=[("256", "256", "Trained size"), ("384", "384", ""), ("512", "512", "")], default="256"
    )
    active_layer_only: BoolProperty(name="Active layer only", default=False)
    show_advanced: BoolProperty(name="Advanced", default=False)
    jobs: CollectionProperty(type=FLIPSKETCH_PG_job)
    shots: CollectionProperty(type=FLIPSKETCH_PG_shot)
    shot_index: IntProperty()

    def shot_params(self, shot) -> dict:
        """The panel's parameters with the shot's overrides."""
        params = {**self.params(), "prompt": shot.prompt}
        if shot.frames:
            params["frames"] = shot.frames
        if shot.motion >= 0:
            params["motion"] = shot.motion
        if shot.seed >= 0:
            params["seed"] = shot.seed
        if shot.variants:
            params["variants"] = shot.variants
        return params

    def params(self) -> dict:
        """What every new job sends; "loras" only when some are enabled, so
        that backends without LoRA support keep accepting the jobs."""
        size = int(self.resolution)
        params = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "motion": self.motion,
            "frames": self.frames,
            "seed": self.seed,
            "variants": self.variants,
            "steps": self.steps,
            "guidance": self.guidance,
            "align": self.align,
            "tau_align": self.tau_align,
            "tau_compose": self.tau_compose,
            "width": size,
            "height": size,
        }
        loras = addon_preferences(bpy.context).lora_params()
        if loras:
            params["loras"] = loras
        return params


_classes = (FLIPSKETCH_PG_job, FLIPSKETCH_PG_shot, FLIPSKETCH_PG_settings)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_classes)


def scene_settings(scene: bpy.types.Scene) -> FLIPSKETCH_PG_settings:
    """The add-on's settings, jobs and shots of `scene` (`Scene.flipsketch`)."""
    return scene.flipsketch  # pyright: ignore[reportAttributeAccessIssue]  added by register(): no stub knows it


def register() -> None:
    _register_classes()
    bpy.types.Scene.flipsketch = PointerProperty(type=FLIPSKETCH_PG_settings)  # pyright: ignore[reportAttributeAccessIssue]  Blender's way to add it


def unregister() -> None:
    del bpy.types.Scene.flipsketch  # pyright: ignore[reportAttributeAccessIssue]  added by register()
    _unregister_classes()
