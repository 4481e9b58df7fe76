"""Shared fixtures: the backend's interpreter and the tiny random model.

The Blender tests run in two environments (bpy 4.5 on Python 3.11, bpy 5.3 on
3.13; see build.py) against one backend: FLIPSKETCH_TEST_BACKEND_PYTHON names
its interpreter (default: this one) and FLIPSKETCH_TEST_MODEL a tiny model made
once for both runs (default: one made per session with that interpreter).

Blender's user resources are redirected before anything imports bpy, so tests
never touch a developer's real Blender preferences or extensions; each pytest
process (each pytest-xdist worker) gets its own folder, and builds the
extension zip once, into its own temporary folder.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")  # xdist sets it before conftest is imported
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix=f"flipsketch-blender-user-{WORKER}-")
atexit.register(shutil.rmtree, os.environ["BLENDER_USER_RESOURCES"], ignore_errors=True)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def backend_python() -> Path:
    """The interpreter with the backend and its dependencies installed."""
    return Path(os.environ.get("FLIPSKETCH_TEST_BACKEND_PYTHON") or sys.executable)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, backend_python: Path) -> Path:
    shared = os.environ.get("FLIPSKETCH_TEST_MODEL")
    if shared:
        return Path(shared)
    folder = tmp_path_factory.mktemp("models") / "tiny"
    command = [backend_python, "-m", "flipsketch.cli", "model", "create-tiny", folder]
    subprocess.run(command, check=True, capture_output=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from flipsketch.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def metric_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny random CLIP and X-CLIP (4-frame) models in the published layouts."""
    from flipsketch.tiny_model import create_tiny_clip, create_tiny_xclip

    folder = tmp_path_factory.mktemp("metric-models")
    return create_tiny_clip(folder / "clip"), create_tiny_xclip(folder / "xclip", num_frames=4)


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installable extension, built once per pytest process by `build.py zip`."""
    target = tmp_path_factory.mktemp("extension") / "flipsketch-0.1.0.zip"
    result = subprocess.run(
        [sys.executable, ROOT / "build.py", "zip", target], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target
