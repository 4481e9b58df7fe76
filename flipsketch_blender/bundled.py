"""The backend source bundled with the add-on, and its standard-library HTTP
client loaded from it (no torch, nothing added to Blender's sys.path)."""

import importlib.util
import sys
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent


def backend_source() -> Path:
    """The backend source: inside the installed extension, or beside it in a checkout."""
    for candidate in (ADDON_DIR / "backend", ADDON_DIR.parent / "backend"):
        if (candidate / "flipsketch" / "client.py").is_file():
            return candidate
    raise FileNotFoundError("The FlipSketch backend source is missing from the add-on.")


def client_library():
    """flipsketch/client.py (standard library only), loaded by path so that
    nothing is added to Blender's sys.path."""
    name = "flipsketch_blender_client"
    if name not in sys.modules:
        path = backend_source() / "flipsketch" / "client.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"The FlipSketch backend client {path} cannot be loaded.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
