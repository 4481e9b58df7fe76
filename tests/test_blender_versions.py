"""Which Blender the add-on runs in, and what that Blender allows: the tested
and supported versions, and Blender's "Allow Online Access" setting."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import sys
from pathlib import Path

import bpy
import pytest

from .conftest import ROOT
from .test_blender import SQUARE, addon, scene  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, pump_until_done

NETWORK_ADVICE = "turn on Allow Online Access in Preferences › System › Network"


@pytest.fixture
def offline(addon):
    """Blender with "Allow Online Access" off (the headless default, set explicitly)."""
    system = bpy.context.preferences.system
    saved, system.use_online_access = system.use_online_access, False
    assert bpy.app.online_access is False
    yield
    system.use_online_access = saved


def test_versions_name_the_tested_and_supported_blenders(addon) -> None:
    versions = addon_module("versions")
    assert versions.support(bpy.app.version) == "tested"  # CI runs these tests in every tested Blender
    assert [versions.support(v) for v in [(4, 5, 15), (5, 0, 1), (5, 1, 0), (5, 2, 3), (5, 3, 0), (4, 4, 0)]] == [
        "tested",
        "supported",
        "not supported",
        "supported",
        "tested",
        "not supported",
    ]
    assert versions.summary() == "tested on Blender 4.5 LTS and 5.3; supported: 4.5 LTS, 5.0, 5.2 LTS, 5.3"
    manifest = (ROOT / "blender_manifest.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "Tested on Blender 4.5 LTS and 5.3; supported: 4.5 LTS, 5.0, 5.2 LTS, 5.3" in manifest
    assert "tested on 4.5 LTS and 5.3" in readme and "supported: 4.5 LTS, 5.0, 5.2 LTS and 5.3" in readme


def test_install_backend_is_refused_without_online_access(scene, addon, offline, tmp_path: Path) -> None:
    saved, addon.backend_path = addon.backend_path, str(tmp_path / "backend")
    try:
        with pytest.raises(RuntimeError, match=f"Nothing was installed. .*{NETWORK_ADVICE}"):
            bpy.ops.flipsketch.install_backend()
    finally:
        addon.backend_path = saved
    assert not (tmp_path / "backend").exists()  # no venv, no log: nothing started
    assert not addon_module("preferences").install_status["running"]


def test_model_download_respects_online_access(scene, addon, offline) -> None:
    add_camera()
    add_drawing(SQUARE)
    saved = addon.model, addon.model_subfolder
    addon.model, addon.model_subfolder = "flipsketch-tests/never-downloaded", ""  # a hub id, not in any cache
    try:
        assert bpy.ops.flipsketch.animate() == {"FINISHED"}
        pump_until_done()
    finally:
        addon.model, addon.model_subfolder = saved
    job = scene.flipsketch.jobs[-1]
    assert job.state == "failed"
    assert "flipsketch-tests/never-downloaded" in job.message and "could not be downloaded" in job.message
    assert NETWORK_ADVICE in job.message and "downloaded model folder" in job.message
    # a model folder needs no network: the same offline Blender animates with it
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    assert scene.flipsketch.jobs[-1].state == "imported", scene.flipsketch.jobs[-1].message


def test_the_managed_server_is_offline_exactly_when_blender_is(addon, monkeypatch) -> None:
    backend = addon_module("backend")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert backend.server_environment(online=False)["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in backend.server_environment(online=True)
    failure = "Model x is not in the local cache (/c) and could not be downloaded (OfflineModeIsEnabled)."
    assert backend.offline_failure(failure, online=True) == failure
    assert backend.offline_failure("The prompt is empty.", online=False) == "The prompt is empty."
    assert NETWORK_ADVICE in backend.offline_failure(failure, online=False)
