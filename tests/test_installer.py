"""`python build.py install-backend DIR`: the private backend venv the add-on installs."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flipsketch.machine import TORCH_CUDA_INDEX

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "backend"))
from flipsketch_setup import install_backend, install_state, torch_index, unsupported_python, venv_problem


def test_install_then_detect_and_repair_a_broken_install(tmp_path: Path) -> None:
    target = tmp_path / "backend"
    assert install_state(target) == "missing"
    result = subprocess.run(
        [sys.executable, ROOT / "build.py", "install-backend", target], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "torch: CPU build" in result.stdout  # it says what it chose
    assert install_state(target) == "ok" and (target / "install.log").stat().st_size > 0
    doctor = subprocess.run([target / "venv" / "bin" / "flipsketch", "doctor"], capture_output=True, text=True)
    assert "CPU only" in doctor.stdout

    messages: list[str] = []
    install_backend(target, log=messages.append)
    assert messages == [f"backend already installed in {target}"]  # nothing redone

    (target / "INSTALLING").write_text("killed mid-install")  # as a crash would leave it
    (target / "installed.json").unlink()
    assert install_state(target) == "broken"
    install_backend(target, log=messages.append)
    assert any(m.startswith("repairing backend") for m in messages)
    assert install_state(target) == "ok" and not (target / "INSTALLING").exists()


def test_python_versions_outside_requires_python_are_refused_by_name() -> None:
    assert unsupported_python((3, 11)) is None and unsupported_python((3, 13)) is None
    for version in [(3, 10), (3, 14)]:
        refusal = unsupported_python(version)
        assert refusal and f"this is Python {version[0]}.{version[1]}" in refusal and ">=3.11,<3.14" in refusal


def test_a_pin_without_a_wheel_for_this_python_is_refused_at_once(tmp_path: Path) -> None:
    """numpy 1.26.4 (the pin before it was split by Python version) has no
    wheel for Python 3.13: the install stops at pip's resolution, names it,
    and leaves an install that the next run repairs."""
    spec = importlib.util.spec_from_file_location("flipsketch_build", ROOT / "build.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    backend = tmp_path / "backend"
    shutil.copytree(ROOT / "backend", backend, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    pyproject = backend / "pyproject.toml"
    pinned = pyproject.read_text().replace("\"numpy==1.26.4; python_version < '3.13'\"", '"numpy==1.26.4"')
    assert '"numpy==1.26.4",' in pinned
    pyproject.write_text(pinned)
    target = tmp_path / "installed"
    result = subprocess.run(
        [build.find_python((3, 13)), backend / "flipsketch_setup.py", target], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "No prebuilt package (wheel) of numpy==1.26.4 for Python 3.13" in result.stderr
    assert "nothing was installed" in result.stderr
    assert not list((target / "venv").rglob("site-packages/numpy"))  # refused at resolution: nothing built
    assert install_state(target) == "broken"  # the next run repairs it


def _offline(monkeypatch, tmp_path: Path) -> None:
    """No network: pip finds packages only in an empty folder, so an install
    stops at the first download, after the venv has been checked and repaired."""
    (tmp_path / "no-index").mkdir()
    monkeypatch.setenv("FLIPSKETCH_TORCH_INDEX", str(tmp_path / "no-index"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-index"))


def _venv_without_pip(target: Path) -> None:
    target.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", target / "venv"], check=True)
    (target / "INSTALLING").write_text("started")  # interrupted before pip was bootstrapped


def _venv_with_dangling_python(target: Path) -> None:
    target.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", target / "venv"], check=True)
    bin_dir = target / "venv" / "bin"
    for name in ("python", "python3", f"python3.{sys.version_info.minor}"):
        (bin_dir / name).unlink()
    (bin_dir / "python").symlink_to("/nonexistent/removed-blender/python3.11")
    (target / "installed.json").write_text("{}")  # a stamp of another install


@pytest.mark.parametrize("damage", [_venv_without_pip, _venv_with_dangling_python])
def test_an_unusable_venv_is_recreated_and_the_stamp_comes_last(tmp_path: Path, monkeypatch, damage) -> None:
    _offline(monkeypatch, tmp_path)
    target = tmp_path / "backend"
    damage(target)
    assert venv_problem(target / "venv") is not None and install_state(target) == "broken"
    messages: list[str] = []
    with pytest.raises(RuntimeError, match="nothing was installed"):  # offline: the first download stops it
        install_backend(target, log=messages.append)
    assert any("is unusable" in m and "creating it again" in m for m in messages)
    assert venv_problem(target / "venv") is None  # pip runs in the new venv
    pip_output = (target / "install.log").read_text().rsplit("-m pip install", 1)[1]
    assert "No module named pip" not in pip_output and "No matching distribution" in pip_output  # at the download
    assert (target / "INSTALLING").exists() and not (target / "installed.json").exists()
    messages.clear()
    with pytest.raises(RuntimeError, match="nothing was installed"):  # a retry reuses the repaired venv
        install_backend(target, log=messages.append)
    assert not any("is unusable" in m for m in messages) and install_state(target) == "broken"


def test_windows_with_an_nvidia_gpu_gets_the_cuda_torch(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text('#!/bin/sh\necho "GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-0)"\n')
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FLIPSKETCH_TORCH_INDEX", raising=False)
    assert torch_index("win32") == ("CUDA build (NVIDIA GPU found)", ["--extra-index-url", TORCH_CUDA_INDEX])
    assert torch_index("linux") == ("CUDA build (NVIDIA GPU found)", [])  # PyPI's Linux wheels are CUDA builds
