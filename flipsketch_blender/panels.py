"""The "FlipSketch" tab in the 3D viewport's sidebar."""

from pathlib import Path
from typing import TYPE_CHECKING

import bpy

from .job_states import JobKind, JobState
from .preferences import addon_preferences
from .runtime import output_root

if TYPE_CHECKING:  # a stub-only module: Blender has no bpy.stub_internal
    from bpy.stub_internal.rna_enums import IconItems

STATE_ICONS: "dict[str, IconItems]" = {
    JobState.IMPORTED: "CHECKMARK",
    JobState.DONE: "CHECKMARK",
    JobState.FAILED: "ERROR",
    JobState.CANCELLED: "CANCEL",
    JobState.REPLACED: "FILE_REFRESH",
}


def job_summary(job) -> str:
    """A job's row in the list: prompt, then object, frame, seed(s) and, once
    ranked, the best variant's score (a training run: its name); active jobs
    add their progress."""
    text = job.prompt[:40] or job.key
    if job.kind != JobKind.TRAIN:
        count = len(job.variants) or job.variant_count
        seeds = f"seeds {job.seed}-{job.seed + count - 1}" if count > 1 else f"seed {job.seed}"
        text += f" · {job.object_name} f{job.frame} · {seeds}"
        if job.variants and job.variants[0].score >= 0:  # ranked: the visible (best) variant's score
            text += f" · score {job.variants[0].score:.3g}"
    if job.active:
        text += f" · {job.progress:.0%}"
    return text


def job_icon(job) -> "IconItems":
    if job.active:
        return "TIME"
    return STATE_ICONS.get(job.state, "INFO")


class FLIPSKETCH_UL_jobs(bpy.types.UIList):
    """Every job of the scene, newest first; the selected one's details are shown below."""

    def draw_item(self, context, layout, data, job, icon, active_data, active_property, index):
        layout.label(text=job_summary(job), icon=job_icon(job))

    def filter_items(self, context, data, propname):
        jobs = getattr(data, propname)
        if self.filter_name:
            flags = bpy.types.UI_UL_list.filter_items_by_name(
                self.filter_name, self.bitflag_filter_item, jobs, "prompt"
            )
        else:
            flags = [self.bitflag_filter_item] * len(jobs)
        return flags, [len(jobs) - 1 - index for index in range(len(jobs))]  # newest first


def draw_job(layout: bpy.types.UILayout, job) -> None:
    """The selected job: progress or state, message, variants (seed, score) and what can be done with it."""
    box = layout.box()
    row = box.row()
    if job.active:
        eta = f", {job.eta:.0f} s left" if job.eta >= 0 else ""
        row.progress(factor=job.progress, type="BAR", text=f"{job.stage or job.state} {job.progress:.0%}{eta}")
        row.operator("flipsketch.cancel", text="", icon="CANCEL").key = job.key
    else:
        row.label(text=job.state.capitalize(), icon=job_icon(job))
        row.operator("flipsketch.remove_job", text="", icon="X").key = job.key
    if job.message:
        box.label(text=job.message, icon="ERROR" if job.state == JobState.FAILED else "INFO")
    for variant in job.variants:
        score = f" · score {variant.score:.3g}" if variant.score >= 0 else ""
        if variant.layer:
            box.label(text=f"{variant.layer} · seed {variant.seed}{score}", icon="OUTLINER_DATA_GP_LAYER")
        else:
            box.label(text=f"Not imported · seed {variant.seed}{score}", icon="FILE_FOLDER")
    if job.active:
        return
    row = box.row(align=True)
    row.operator("flipsketch.open_folder", icon="FILE_FOLDER").path = job.out_dir
    if job.kind != JobKind.TRAIN and job.state == JobState.IMPORTED:
        row.operator("flipsketch.regenerate", icon="FILE_REFRESH").key = job.key


class FLIPSKETCH_PT_main(bpy.types.Panel):
    bl_label = "FlipSketch"
    bl_idname = "FLIPSKETCH_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlipSketch"

    def draw(self, context):
        layout, settings = self.layout, context.scene.flipsketch
        layout.prop(settings, "prompt", text="")
        layout.prop(settings, "motion", slider=True)
        row = layout.row(align=True)
        row.prop(settings, "frames")
        row.prop(settings, "timing", text="")
        row = layout.row(align=True)
        row.prop(settings, "seed")
        row.operator("flipsketch.new_seed", text="", icon="FILE_REFRESH")
        layout.prop(settings, "variants")
        layout.prop(settings, "quality")
        row = layout.row(align=True)
        row.prop(settings, "draft", toggle=True)
        sub = row.row(align=True)
        sub.enabled = not settings.draft
        sub.prop(settings, "resolution")
        layout.prop(settings, "active_layer_only")
        layout.prop(settings, "show_advanced", icon="TRIA_DOWN" if settings.show_advanced else "TRIA_RIGHT")
        if settings.show_advanced:
            box = layout.box()
            for name in ("negative_prompt", "steps", "guidance"):
                box.prop(settings, name)
            row = box.row()
            row.enabled = settings.quality != "draft"  # Draft runs no alignment
            row.prop(settings, "tau_align")
            for name in ("tau_compose", "reference", "released_input_range"):
                box.prop(settings, name)
            row = box.row(align=True)
            row.prop(settings, "use_min_score")
            sub = row.row(align=True)
            sub.enabled = settings.use_min_score
            sub.prop(settings, "min_score")
        draw_loras(layout, context)  # pyright: ignore[reportArgumentType]  Panel.layout is set during draw()
        row = layout.row(align=True)
        row.operator("flipsketch.animate", icon="PLAY")
        row.operator("flipsketch.extend", icon="FORWARD")
        if not context.scene.camera:
            layout.label(text="No camera: the drawing is seen through this view.", icon="INFO")
        _, unsaved = output_root(context)
        if unsaved:
            column = layout.column(align=True)
            column.label(text="The .blend is not saved: results go to a temporary folder.", icon="ERROR")
            column.label(text="Save the file to keep them beside it.", icon="BLANK1")
        if settings.jobs:
            layout.template_list("FLIPSKETCH_UL_jobs", "", settings, "jobs", settings, "job_index", rows=4)
            if 0 <= settings.job_index < len(settings.jobs):
                draw_job(layout, settings.jobs[settings.job_index])  # pyright: ignore[reportArgumentType]  Panel.layout is set during draw()


def draw_loras(layout: bpy.types.UILayout, context) -> None:
    """The LoRAs of the preferences, compact, with a button to add one: new
    jobs use the enabled ones, so they stay in sight where Animate is."""
    loras = [lora for lora in addon_preferences(context).loras if lora.path.strip()]
    box = layout.box()
    row = box.row()
    row.label(text="Sketch styles (LoRA)")
    row.operator("flipsketch.lora_add", text="", icon="ADD")
    for lora in loras:
        row = box.row(align=True)
        row.prop(lora, "enabled", text=Path(lora.path).name or lora.path)
        row.prop(lora, "weight", text="", slider=True)


class FLIPSKETCH_PT_training(bpy.types.Panel):
    """Material for training a sketch-style LoRA on one's own animation."""

    bl_label = "Training"
    bl_idname = "FLIPSKETCH_PT_training"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FlipSketch"
    bl_parent_id = "FLIPSKETCH_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        self.layout.operator("flipsketch.export_training_clip", icon="EXPORT")
        self.layout.operator("flipsketch.train_lora", icon="EXPERIMENTAL")


_classes = (FLIPSKETCH_UL_jobs, FLIPSKETCH_PT_main, FLIPSKETCH_PT_training)

register, unregister = bpy.utils.register_classes_factory(_classes)
