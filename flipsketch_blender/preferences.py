"""Add-on preferences: where the backend runs, which model and sketch-style
LoRAs it uses, where results and training clips go."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import bpy

from . import backend
from .bundled import backend_source

ADDON = __name__.rpartition(".")[0]  # the add-on's module, e.g. bl_ext.user_default.flipsketch
PUBLISHED_MODEL = "Hmrishav/t2v_sketch-lora"
LICENCE_NOTE = "The published model is licensed CC-BY-NC-4.0: non-commercial use only."
install_status = {"text": "", "running": False}


def addon_preferences(context) -> "FLIPSKETCH_AP_preferences":
    return context.preferences.addons[ADDON].preferences


def default_backend_dir() -> Path:
    try:  # the extension's own user folder (Blender 4.2+ extensions)
        return Path(bpy.utils.extension_path_user(ADDON, path="backend", create=True))
    except (ValueError, AttributeError):  # loaded as a legacy add-on (development)
        return Path(bpy.utils.user_resource("DATAFILES", path="flipsketch/backend", create=True))


class FLIPSKETCH_OT_install_backend(bpy.types.Operator):
    """Create (or repair) the private Python environment that runs the FlipSketch backend"""

    bl_idname = "flipsketch.install_backend"
    bl_label = "Install Backend"

    def execute(self, context):
        if install_status["running"]:
            self.report({"WARNING"}, "The backend is being installed already.")
            return {"CANCELLED"}
        if not bpy.app.online_access:  # the install downloads Python packages
            self.report({"ERROR"}, f"Nothing was installed. {backend.OFFLINE_ADVICE}")
            return {"CANCELLED"}
        target = Path(addon_preferences(context).backend_dir())
        script = backend_source() / "flipsketch_setup.py"
        install_status.update(running=True, text=f"Installing into {target} (log: {target / 'install.log'})…")

        def work() -> None:
            result = subprocess.run([sys.executable, str(script), str(target)], capture_output=True, text=True)
            ok = result.returncode == 0
            lines = (result.stdout + result.stderr).strip().splitlines()
            install_status.update(
                running=False, text=("Installed. " if ok else "Install failed: ") + (lines[-1] if lines else "")
            )

        threading.Thread(target=work, daemon=True).start()
        return {"FINISHED"}


class FLIPSKETCH_PG_lora(bpy.types.PropertyGroup):
    """A sketch-style LoRA the backend applies on top of the model in every job."""

    path: bpy.props.StringProperty(
        name="LoRA",
        subtype="FILE_PATH",
        description="Folder of a trained sketch-style LoRA, or a single-file LoRA (.safetensors: kohya-ss, diffusers)",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    weight: bpy.props.FloatProperty(
        name="Weight",
        default=1.0,
        min=-4.0,
        max=4.0,
        soft_min=-1.0,
        soft_max=2.0,
        description="How strongly the style applies (negative: away from it)",
    )
    enabled: bpy.props.BoolProperty(name="Enabled", default=True, description="Use this LoRA in new jobs")


class FLIPSKETCH_UL_loras(bpy.types.UIList):
    def draw_item(self, context, layout, data, lora, icon, active_data, active_property, index):
        row = layout.row(align=True)
        row.prop(lora, "enabled", text="")
        row.prop(lora, "path", text="")
        row.prop(lora, "weight", text="")


class FLIPSKETCH_OT_lora_add(bpy.types.Operator):
    """Add a sketch-style LoRA to the list used by every new job: a folder written by Train LoRA or
    `flipsketch train-lora`, or a single .safetensors file (kohya-ss, diffusers)"""

    bl_idname = "flipsketch.lora_add"
    bl_label = "Add LoRA"
    directory: bpy.props.StringProperty(
        name="LoRA folder",
        subtype="DIR_PATH",
        description="A LoRA's folder, as `flipsketch train-lora` or Train LoRA writes it",
        options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    filepath: bpy.props.StringProperty(
        name="LoRA file",
        subtype="FILE_PATH",
        description="A single-file LoRA (.safetensors); none chosen: the folder is the LoRA",
        options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    filter_glob: bpy.props.StringProperty(default="*.safetensors", options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)  # a file, or a folder; execute runs when it is chosen
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = self.filepath if self.filepath.lower().endswith(".safetensors") else self.directory
        if not addon_preferences(context).add_lora(path):
            self.report({"WARNING"}, f"The LoRA {path} is in the list already.")
            return {"CANCELLED"}
        return {"FINISHED"}


class FLIPSKETCH_OT_lora_remove(bpy.types.Operator):
    """Remove the selected LoRA from the list (its files stay)"""

    bl_idname = "flipsketch.lora_remove"
    bl_label = "Remove LoRA"

    def execute(self, context):
        prefs = addon_preferences(context)
        if not 0 <= prefs.lora_index < len(prefs.loras):
            self.report({"ERROR"}, "No LoRA is selected: select the entry to remove in the list first.")
            return {"CANCELLED"}
        prefs.loras.remove(prefs.lora_index)
        prefs.lora_index = min(prefs.lora_index, len(prefs.loras) - 1)
        context.preferences.is_dirty = True
        return {"FINISHED"}


class FLIPSKETCH_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    backend_mode: bpy.props.EnumProperty(
        name="Backend",
        items=[
            ("LOCAL", "Managed local", "Start the bundled backend on this machine when needed"),
            ("REMOTE", "Remote server", "Connect to a FlipSketch server at a URL"),
        ],
        default="LOCAL",
        description="Where jobs run: a backend this add-on starts here, or a server elsewhere",
    )
    remote_url: bpy.props.StringProperty(
        name="Server URL", default="http://127.0.0.1:8765", description="Address of a running `flipsketch serve`"
    )
    remote_token: bpy.props.StringProperty(
        name="Token", subtype="PASSWORD", description="The server's access token (empty: the server needs none)"
    )
    backend_path: bpy.props.StringProperty(
        name="Backend folder",
        subtype="DIR_PATH",
        description="Where Install Backend puts its environment (empty: default)",
    )
    backend_python: bpy.props.StringProperty(
        name="Backend Python",
        subtype="FILE_PATH",
        description="Use this interpreter (with flipsketch installed) instead of the installed backend",
    )
    model: bpy.props.StringProperty(
        name="Model", description="Hugging Face id or local folder of the sketch model", default=PUBLISHED_MODEL
    )
    model_subfolder: bpy.props.StringProperty(
        name="Model folder",
        default="checkpoint-2500",
        description="Subfolder of the model holding the weights (empty: the model's top folder)",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        items=[
            ("auto", "Automatic", "GPU when available"),
            ("cuda", "CUDA", "An NVIDIA GPU"),
            ("mps", "Apple", "The GPU of an Apple silicon Mac"),
            ("cpu", "CPU", "No GPU: slow, for trying things out"),
        ],
        default="auto",
        description="Where the managed local backend runs the model",
    )
    output_dir: bpy.props.StringProperty(
        name="Output folder",
        description="Where results are written; '//' means next to the .blend file",
        default="//flipsketch/",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    loras: bpy.props.CollectionProperty(
        type=FLIPSKETCH_PG_lora, name="LoRAs", description="Sketch-style LoRAs; every new job uses the enabled ones"
    )
    lora_index: bpy.props.IntProperty(name="LoRA", description="The selected LoRA")
    training_data_dir: bpy.props.StringProperty(
        name="Training data folder",
        description="Where Export Animation for Training writes clip folders (one per clip)",
        default="~/FlipSketch/training",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    lora_dir: bpy.props.StringProperty(
        name="LoRA folder",
        description="Where Train LoRA writes the LoRAs it trains (one folder per name)",
        default="~/FlipSketch/loras",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )

    def lora_params(self) -> list[dict]:
        """The enabled LoRAs as jobs send them; absolute paths, since the
        backend does not know where the .blend is."""
        return [
            {"path": bpy.path.abspath(lora.path), "weight": round(lora.weight, 4)}  # float32 0.7 -> 0.7
            for lora in self.loras
            if lora.enabled and lora.path.strip()
        ]

    def add_lora(self, path: str) -> bool:
        """List a LoRA (folder or .safetensors file), enabled at weight 1; False when it is listed already."""

        def same(folder: str) -> str:
            return os.path.normcase(os.path.normpath(os.path.expanduser(bpy.path.abspath(folder.strip()))))

        if path.strip() and any(lora.path.strip() and same(lora.path) == same(path) for lora in self.loras):
            return False
        lora = self.loras.add()
        lora.path, lora.weight, lora.enabled = path, 1.0, True
        self.lora_index = len(self.loras) - 1
        bpy.context.preferences.is_dirty = True  # a collection change is not saved otherwise
        return True

    def backend_dir(self) -> str:
        return bpy.path.abspath(self.backend_path) if self.backend_path else str(default_backend_dir())

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "backend_mode")
        if self.backend_mode == "REMOTE":
            layout.prop(self, "remote_url")
            layout.prop(self, "remote_token")
        else:
            box = layout.box()
            box.prop(self, "backend_path")
            row = box.row()
            row.enabled = not install_status["running"]
            row.operator("flipsketch.install_backend", icon="IMPORT")
            if install_status["text"]:
                box.label(text=install_status["text"], icon="INFO")
            box.label(text=f"Server log: {os.path.join(self.backend_dir(), 'server', 'server.log')}")
            box.prop(self, "backend_python")
            box.prop(self, "device")  # the remote server chooses its own
        box = layout.box()
        box.prop(self, "model")
        box.prop(self, "model_subfolder")
        box.label(text=LICENCE_NOTE, icon="ERROR")
        self.draw_loras(layout.box())
        layout.prop(self, "output_dir")
        layout.prop(self, "training_data_dir")
        layout.prop(self, "lora_dir")
        layout.operator("flipsketch.diagnostics", icon="TEXT")

    def draw_loras(self, layout: bpy.types.UILayout) -> None:
        layout.label(text="Sketch-style LoRAs (used by every new job)")
        row = layout.row()
        row.template_list("FLIPSKETCH_UL_loras", "", self, "loras", self, "lora_index", rows=3)
        column = row.column(align=True)
        column.operator("flipsketch.lora_add", text="", icon="ADD")
        column.operator("flipsketch.lora_remove", text="", icon="REMOVE")


_classes = (
    FLIPSKETCH_OT_install_backend,
    FLIPSKETCH_PG_lora,
    FLIPSKETCH_UL_loras,
    FLIPSKETCH_OT_lora_add,
    FLIPSKETCH_OT_lora_remove,
    FLIPSKETCH_AP_preferences,
)

register, unregister = bpy.utils.register_classes_factory(_classes)
