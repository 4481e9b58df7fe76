"""Add-on preferences: where the backend runs and which model it uses."""

import bpy

PUBLISHED_MODEL = "Hmrishav/t2v_sketch-lora"
LICENCE_NOTE = "The published model is licensed CC-BY-NC-4.0: non-commercial use only."


class FLIPSKETCH_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_mode: bpy.props.EnumProperty(
        name="Backend",
        items=[
            ("LOCAL", "Managed local", "Start the bundled backend on this machine when needed"),
            ("REMOTE", "Remote server", "Connect to a FlipSketch server at a URL"),
        ],
        default="LOCAL",
    )
    remote_url: bpy.props.StringProperty(name="Server URL", default="http://127.0.0.1:8765")
    remote_token: bpy.props.StringProperty(name="Token", subtype="PASSWORD")
    model: bpy.props.StringProperty(
        name="Model",
        description="Hugging Face id or local folder of the sketch model",
        default=PUBLISHED_MODEL,
    )
    model_subfolder: bpy.props.StringProperty(name="Model folder", default="checkpoint-2500")
    device: bpy.props.EnumProperty(
        name="Device",
        items=[("auto", "Automatic", "GPU when available"), ("cuda", "CUDA", ""), ("cpu", "CPU", "")],
        default="auto",
    )
    output_dir: bpy.props.StringProperty(name="Output folder", default="//flipsketch/", subtype="DIR_PATH")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "backend_mode")
        if self.backend_mode == "REMOTE":
            layout.prop(self, "remote_url")
            layout.prop(self, "remote_token")
        box = layout.box()
        box.prop(self, "model")
        box.prop(self, "model_subfolder")
        box.label(text=LICENCE_NOTE, icon="INFO")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")


_classes = (FLIPSKETCH_AP_preferences,)


def register() -> None:
    for cls in _classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
