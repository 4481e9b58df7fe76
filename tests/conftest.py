"""Shared fixtures: the tiny random model, written once per test session.

Blender's user resources are redirected before anything imports bpy, so tests
never touch a developer's real Blender preferences or extensions.
"""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="flipsketch-blender-user-"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flipsketch.cli import main

    folder = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["model", "create-tiny", str(folder)]) == 0
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
