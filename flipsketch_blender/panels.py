"""The "FlipSketch" tab in the 3D viewport's sidebar."""

from pathlib import Path
from typing import Literal

import bpy

from .preferences import addon_preferences
from .properties import ACTIVE_STATES

MAX_LISTED_JOBS = 8


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
        layout.prop(settings, "active_layer_only")
        layout.prop(settings, "show_advanced", icon="TRIA_DOWN" if settings.show_advanced else "TRIA_RIGHT")
        if settings.show_advanced:
            box = layout.box()
            for name in ("negative_prompt", "steps", "guidance", "align", "tau_align", "tau_compose", "resolution"):
                box.prop(settings, name)
        draw_loras(layout, context)  # pyright: ignore[reportArgumentType]  Panel.layout is set during draw()
        row = layout.row(align=True)
        row.operator("flipsketch.animate", icon="PLAY")
        row.operator("flipsketch.extend", icon="FORWARD")
        if not context.scene.camera:
            layout.label(text="No camera: the drawing is seen through this view.", icon="INFO")
        for job in list(settings.jobs)[-MAX_LISTED_JOBS:][::-1]:
            box = layout.box()
            row = box.row()
            training = job.kind == "train"
            row.label(text=job.prompt[:32] or job.key, icon="EXPERIMENTAL" if training else "RENDER_ANIMATION")
            if job.state in ACTIVE_STATES:
                row.operator("flipsketch.cancel", text="", icon="CANCEL").key = job.key
            else:
                row.operator("flipsketch.remove_job", text="", icon="X").key = job.key
            if job.state in ACTIVE_STATES:
                eta = f", {job.eta:.0f} s left" if job.eta >= 0 else ""
                box.progress(factor=job.progress, type="BAR", text=f"{job.stage or job.state} {job.progress:.0%}{eta}")
            else:
                icon: dict[str, Literal["CHECKMARK", "ERROR", "CANCEL"]]
                icon = {"imported": "CHECKMARK", "done": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}
                box.label(text=job.state.capitalize(), icon=icon.get(job.state, "INFO"))
            if job.message:
                box.label(text=job.message, icon="ERROR" if job.state == "failed" else "INFO")
            if training:  # a LoRA folder: nothing to regenerate or extend
                if job.state not in ACTIVE_STATES:
                    box.operator("flipsketch.open_folder", icon="FILE_FOLDER").path = job.out_dir
            elif job.state == "imported":
                row = box.row(align=True)
                row.operator("flipsketch.open_folder", icon="FILE_FOLDER").path = job.out_dir
                row.operator("flipsketch.regenerate", icon="FILE_REFRESH").key = job.key


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


_classes = (FLIPSKETCH_PT_main, FLIPSKETCH_PT_training)

register, unregister = bpy.utils.register_classes_factory(_classes)
