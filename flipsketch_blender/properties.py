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

from .job_states import ACTIVE_STATES, JobKind, JobState, enum_items
from .preferences import addon_preferences

TIMINGS = [
    ("1", "Ones", "A new drawing every frame"),
    ("2", "Twos", "Hold each drawing 2 frames"),
    ("3", "Threes", "Hold each drawing 3 frames"),
]
SIZE_MIN, SIZE_MAX, SIZE_STEP = 64, 1024, 8  # what the backend accepts (flipsketch.params)
TRAINED_SIZE, DRAFT_SIZE = 256, 128
MOTION_HELP = "0 = stays close to your drawing, 1 = most motion"
# Measured time of each quality preset over plain text-to-video sampling: a copy of the
# backend's flipsketch.params.QUALITY_TIME_RATIOS (the add-on cannot import the backend;
# a test keeps the two equal).
QUALITY_TIME_RATIOS = {"draft": 0.94, "standard": 1.94, "paper": 5.71}
QUALITIES = [
    (
        "draft",
        "Draft",
        "No frame alignment (composition only, like the released demo): "
        f"{QUALITY_TIME_RATIOS['draft']}× the time of plain text-to-video",
    ),
    (
        "standard",
        "Standard",
        "Frame alignment that stops early once the loss stops improving (default): "
        f"{QUALITY_TIME_RATIOS['standard']}× the time of plain text-to-video",
    ),
    (
        "paper",
        "Paper-exact",
        "The paper's fixed alignment schedule (10 iterations at each aligned step): "
        f"{QUALITY_TIME_RATIOS['paper']}× the time of plain text-to-video",
    ),
]
REFERENCES = [
    ("inversion", "Inversion (ours)", "Reference frames from single-frame passes along the sketch's inversion"),
    (
        "released",
        "Released",
        "The authors' released construction: 5 inverted copies averaged, re-denoised as a video next to the "
        "animation (slower; for A/B comparison)",
    ),
]


def _snap_size(self, _context) -> None:
    """Sizes are multiples of 8 (the VAE's scale): round to the nearest one."""
    snapped = min(max(int(self.resolution / SIZE_STEP + 0.5) * SIZE_STEP, SIZE_MIN), SIZE_MAX)
    if snapped != self.resolution:
        self.resolution = snapped


class FLIPSKETCH_PG_variant(bpy.types.PropertyGroup):
    """One variant of a job's result: its layer, seed and (once ranked) score."""

    layer: StringProperty(name="Layer", description="The Grease Pencil layer holding this variant")
    seed: IntProperty(name="Seed", description="The seed this variant was made with")
    score: FloatProperty(
        name="Score", default=-1.0, description="Ranking score of this variant, higher is better (-1: not ranked)"
    )
    folder: StringProperty(
        name="Folder", default=".", description="The variant's folder inside the job's output folder"
    )


class FLIPSKETCH_PG_job(bpy.types.PropertyGroup):
    """One row of the job list (look rows up by key: adding or removing rows moves them)"""

    key: StringProperty(name="Key", description="The job's unique key")
    kind: EnumProperty(
        name="Kind",
        items=enum_items(JobKind, {"train": "Trains a LoRA; the output folder is the LoRA's folder"}),
        default=JobKind.ANIMATE.value,
        description="What the job makes",
    )
    prompt: StringProperty(name="Prompt", description="The job's prompt")
    state: EnumProperty(
        name="State", items=enum_items(JobState, {}), default=JobState.STARTING.value, description="Where the job is"
    )
    stage: StringProperty(name="Stage", description="The backend's current stage (encode, denoise, …)")
    message: StringProperty(name="Message", description="What the job last reported")
    progress: FloatProperty(
        name="Progress", min=0, max=1, subtype="FACTOR", description="1 only once the result is in the scene"
    )
    eta: FloatProperty(name="Time left", default=-1, description="Seconds left (-1: not known yet)")
    backend_id: StringProperty(name="Backend job", description="The job's id on the backend")
    out_dir: StringProperty(
        name="Output folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        description="Where the job's files are ('//': beside the .blend)",
    )
    object_name: StringProperty(name="Object", description="The Grease Pencil object the job animates")
    camera_name: StringProperty(name="Camera", description="The camera the drawing was seen through")
    frame: IntProperty(name="Frame", description="Scene frame of the job's first drawing")
    timing: IntProperty(name="Timing", default=2, description="Scene frames each drawing is held")
    seed: IntProperty(name="Seed", description="The first variant's seed")
    variant_count: IntProperty(name="Variants", default=1, description="Variants asked for")
    placement: StringProperty(name="Placement", description="JSON: where results go back (export.Placement)")
    shot_name: StringProperty(name="Shot", description="The storyboard shot this job animates")
    variants: CollectionProperty(
        type=FLIPSKETCH_PG_variant,
        name="Variants",
        description="The variants, best first; those imported name their layer, the first is the visible one",
    )
    target_layer: StringProperty(name="Target layer", description="Extension, regeneration: the layer it writes on")
    sequence_object: StringProperty(name="Image sequence", description="The image empty showing the first variant")
    parent_key: StringProperty(name="Parent", description="An extension's parent: the job it continues")
    regenerates: StringProperty(name="Regenerates", description="A regeneration: the job whose segment it replaces")
    first_key: IntProperty(name="First keyframe", description="First keyframe this job wrote on its layer")
    key_count: IntProperty(name="Keyframes", description="How many keyframes it wrote")
    sequence_first: IntProperty(
        name="First file", default=1, description="Number of its first file in the image sequence"
    )

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def layer_names(self) -> list[str]:
        """The layers holding this job's result, best variant first (variants not imported have none)."""
        return [variant.layer for variant in self.variants if variant.layer]


class FLIPSKETCH_PG_shot(bpy.types.PropertyGroup):
    """One storyboard shot: a frame range, its drawing, a prompt, overrides."""

    name: StringProperty(name="Name", description="The shot's name (its marker's)")
    frame_start: IntProperty(name="Start", description="The shot's first frame")
    frame_end: IntProperty(name="End", description="The shot's last frame")
    object_name: StringProperty(name="Drawing", description="Grease Pencil object drawn at the shot's first frame")
    prompt: StringProperty(name="Prompt", description="What should happen in this shot")
    frames: IntProperty(name="Frames", default=0, min=0, max=32, description="0: the panel's setting")
    motion: FloatProperty(
        name="Motion", default=-1, min=-1, max=1, description=f"-1: the panel's setting; {MOTION_HELP}"
    )
    seed: IntProperty(name="Seed", default=-1, min=-1, description="-1: the panel's setting")
    variants: IntProperty(name="Variants", default=0, min=0, max=8, description="0: the panel's setting")
    state: StringProperty(name="State", default="todo", description="todo, queued, done or failed")
    message: StringProperty(name="Message", description="Why the shot failed, or what it last reported")
    job_key: StringProperty(name="Job", description="Key of the shot's latest job")
    previous_job_key: StringProperty(name="Previous job", description="Key of the job whose clip the latest replaces")


class FLIPSKETCH_PG_settings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What should happen, e.g. 'the cat turns its head and meows'")
    negative_prompt: StringProperty(
        name="Negative prompt", description="What should not happen or be drawn, e.g. 'blurry, shaded'"
    )
    motion: FloatProperty(name="Motion", default=0.5, min=0, max=1, subtype="FACTOR", description=MOTION_HELP)
    frames: IntProperty(name="Frames", default=10, min=2, max=32, description="Drawings to generate (trained on 16)")
    timing: EnumProperty(name="Timing", items=TIMINGS, default="2", description="Scene frames each drawing is held")
    seed: IntProperty(name="Seed", default=0, min=0, description="Same seed, same settings: the same animation")
    variants: IntProperty(name="Variants", default=1, min=1, max=8, description="Seeds seed, seed+1, … in one job")
    steps: IntProperty(
        name="Steps", default=25, min=1, max=200, description="Denoising steps: fewer is faster and rougher (25: paper)"
    )
    guidance: FloatProperty(
        name="Guidance", default=9.0, min=0, max=30, description="How closely the motion follows the prompt (9: paper)"
    )
    quality: EnumProperty(
        name="Quality",
        items=QUALITIES,
        default="standard",
        description="How much frame alignment runs: more keeps the frames closer to the drawing, and is slower",
    )
    reference: EnumProperty(
        name="Reference",
        items=REFERENCES,
        default="inversion",
        description="How the reference trajectory (the drawing's own path through the noise levels) is built",
    )
    released_input_range: BoolProperty(
        name="Released input range",
        default=False,
        description="Feed the drawing to the VAE in [0, 1] like the released code, not [-1, 1] (for A/B comparison)",
    )
    use_min_score: BoolProperty(
        name="Hide failures",
        default=False,
        description="Import only the variants that score at least Min score (the others' files stay in the folder)",
    )
    min_score: FloatProperty(
        name="Min score",
        default=0.5,
        min=-1,
        max=1,
        description="Lowest score a variant is imported with: the similarity of its frames to the drawing "
        "(offline line similarity 0-1, or CLIP when the backend has a CLIP model: the released app uses 0.9)",
    )
    tau_align: IntProperty(
        name="Align steps (τ1)", default=10, min=0, max=200, description="Denoising steps with frame alignment"
    )
    tau_compose: IntProperty(
        name="Compose steps (τ2)",
        default=15,
        min=-1,
        max=200,
        description="Denoising steps that compose with the drawing's features (-1: none)",
    )
    resolution: IntProperty(
        name="Size",
        default=TRAINED_SIZE,
        min=SIZE_MIN,
        max=SIZE_MAX,
        step=SIZE_STEP,
        subtype="PIXEL",
        update=_snap_size,
        description=f"Square generation size, a multiple of {SIZE_STEP} ({TRAINED_SIZE}: the trained size); "
        "larger is slower",
    )
    draft: BoolProperty(
        name="Preview",
        default=False,
        description=f"Fast preview: generate at {DRAFT_SIZE} px whatever the size; turn off for the final animation",
    )
    active_layer_only: BoolProperty(
        name="Active layer only", default=False, description="Send only the active layer, not every visible one"
    )
    show_advanced: BoolProperty(name="Advanced", default=False, description="Show the advanced settings")
    jobs: CollectionProperty(type=FLIPSKETCH_PG_job, name="Jobs", description="Every job of the scene, oldest first")
    job_index: IntProperty(name="Job", description="The job whose details are shown")
    shots: CollectionProperty(type=FLIPSKETCH_PG_shot, name="Shots", description="The storyboard's shots")
    shot_index: IntProperty(name="Shot", description="The shot whose settings are shown")

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
        that backends without LoRA support keep accepting the jobs, and
        "min_score" only with Hide failures on. The quality preset sets the
        alignment fields on the backend (flipsketch.params.QUALITY_PRESETS)."""
        size = DRAFT_SIZE if self.draft else self.resolution
        params = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "motion": self.motion,
            "frames": self.frames,
            "seed": self.seed,
            "variants": self.variants,
            "steps": self.steps,
            "guidance": self.guidance,
            "quality": self.quality,
            "reference": self.reference,
            "released_input_range": self.released_input_range,
            "tau_align": self.tau_align,
            "tau_compose": self.tau_compose,
            "width": size,
            "height": size,
        }
        if self.use_min_score:
            params["min_score"] = self.min_score
        loras = addon_preferences(bpy.context).lora_params()
        if loras:
            params["loras"] = loras
        return params


_classes = (FLIPSKETCH_PG_variant, FLIPSKETCH_PG_job, FLIPSKETCH_PG_shot, FLIPSKETCH_PG_settings)


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
