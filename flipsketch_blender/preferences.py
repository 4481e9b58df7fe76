"""Add-on preferences: where the backend runs, which model it uses, where results go."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import bpy

from . import backend

PUBLISHED_MODEL = "Hmrishav/t2v_sketch-lora"
LICENCE_NOTE = "The published model is licensed CC-BY-NC-4.0: non-commercial use only."
install_status = {"text": "", "running": False}


def default_backend_dir() -> Path:
    try:  # the extension's own user folder (Blender 4.2+ extensions)
        return Path(bpy.utils.extension_path_user(__package__, path="backend", create=True))
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
        target = Path(context.preferences.addons[__package__].preferences.backend_dir())
        script = backend.backend_source() / "flipsketch_setup.py"
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


class FLIPSKETCH_OT_diagnostics(bpy.types.Operator):
    """Collect what is needed to report a problem into the text block 'FlipSketch diagnostics'"""

    bl_idname = "flipsketch.diagnostics"
    bl_label = "Collect Diagnostics"

    def execute(self, context):
        from .operators import backend_settings, ensure_pump

        settings = backend_settings(context)
        report = [
            f"Blender {bpy.app.version_string}, add-on {__package__}",
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
        ensure_pump()
        self.report({"INFO"}, "Collecting diagnostics into the text block 'FlipSketch diagnostics'…")
        return {"FINISHED"}


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
    model_subfolder: bpy.props.StringProperty(name="Model folder", default="checkpoint-2500")
    device: bpy.props.EnumProperty(
        name="Device",
        items=[
            ("auto", "Automatic", "GPU when available"),
            ("cuda", "CUDA", ""),
            ("mps", "Apple", ""),
            ("cpu", "CPU", ""),
        ],
        default="auto",
    )
    output_dir: bpy.props.StringProperty(
        name="Output folder",
        description="Where results are written; '//' means next to the .blend file",
        default="//flipsketch/",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
    )

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
        box = layout.box()
        box.prop(self, "model")
        box.prop(self, "model_subfolder")
        box.label(text=LICENCE_NOTE, icon="ERROR")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        layout.operator("flipsketch.diagnostics", icon="TEXT")


_classes = (FLIPSKETCH_OT_install_backend, FLIPSKETCH_OT_diagnostics, FLIPSKETCH_AP_preferences)

register, unregister = bpy.utils.register_classes_factory(_classes)
