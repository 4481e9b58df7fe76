"""`python build.py zip`: Blender's own builder, exact contents, reproducible,
and installable into the real bpy module."""

import hashlib
import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_build_module():
    spec = importlib.util.spec_from_file_location("flipsketch_build", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zip_holds_exactly_the_manifest_addon_and_backend(extension_zip: Path) -> None:
    with zipfile.ZipFile(extension_zip) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    expected = set(_load_build_module().extension_files())
    assert names == expected
    assert {"__init__.py", "preferences.py", "backend/pyproject.toml", "backend/flipsketch/models.py"} <= names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    assert manifest["id"] == "flipsketch" and manifest["blender_version_min"] == "4.5.0"
    assert set(manifest["permissions"]) == {"files", "network"}


def test_zip_is_reproducible(tmp_path: Path) -> None:
    for name in ("first.zip", "second.zip"):
        subprocess.run([sys.executable, ROOT / "build.py", "zip", tmp_path / name], capture_output=True, check=True)
    first, second = (hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("first.zip", "second.zip"))
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.zip", "second.zip"]  # no partial file left beside


def test_zip_installs_and_registers_in_blender(extension_zip: Path) -> None:
    import bpy

    assert bpy.app.version >= (4, 5, 0)  # the manifest's minimum; bpy first: it puts addon_utils on sys.path
    import addon_utils

    module = "bl_ext.user_default.flipsketch"
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}
    try:
        assert module in bpy.context.preferences.addons
        defaults = bpy.context.preferences.addons[module].preferences.bl_rna.properties
        assert defaults["model"].default == "Hmrishav/t2v_sketch-lora"
        assert defaults["output_dir"].default == "//flipsketch/"
        assert hasattr(bpy.types, "FLIPSKETCH_PT_main") and hasattr(bpy.ops.flipsketch, "animate")
    finally:
        addon_utils.disable(module, default_set=True)
    assert module not in bpy.context.preferences.addons
    assert not hasattr(bpy.types, "FLIPSKETCH_PT_main")  # unregistered cleanly
    repos = bpy.context.preferences.extensions.repos
    index = next(i for i, repo in enumerate(repos) if repo.module == "user_default")
    directory = bpy.utils.user_resource("EXTENSIONS", path="user_default")
    assert bpy.ops.extensions.package_uninstall(repo_directory=directory, repo_index=index, pkg_id="flipsketch") == {
        "FINISHED"
    }
    assert not Path(directory, "flipsketch").exists()
