"""`flipsketch doctor` run as a user runs it: the installed console script."""

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from flipsketch.machine import TORCH_CUDA_INDEX

from .conftest import ROOT


def _doctor(env_model: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("flipsketch", path=str(Path(sys.executable).parent))
    assert exe, "the console script `flipsketch` is installed with the backend"
    env = {"PATH": str(Path(sys.executable).parent), "HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path)}
    if env_model:
        env["FLIPSKETCH_MODEL"] = env_model
    return subprocess.run([exe, "doctor"], capture_output=True, text=True, env=env, timeout=120)


def test_doctor_reports_cpu_only_and_missing_model(tmp_path: Path) -> None:
    assert not torch.cuda.is_available()  # this machine has no GPU; the report must say so
    result = _doctor(None, tmp_path)
    assert "CPU only" in result.stdout
    assert "[FAIL] model" in result.stdout and "flipsketch model download Hmrishav/t2v_sketch-lora" in result.stdout
    assert result.returncode == 1


def test_doctor_passes_with_a_complete_model_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = _doctor(str(tiny_model_dir), tmp_path)
    assert f"{tiny_model_dir} (complete)" in result.stdout
    assert "Ready to generate." in result.stdout
    assert result.returncode == 0


def test_doctor_names_an_nvidia_gpu_that_a_cpu_torch_cannot_use(tiny_model_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "bin"  # what doctor_cpu_torch_with_nvidia.sh sets up: the driver answers
    fake.mkdir()
    (fake / "nvidia-smi").write_text('#!/bin/sh\necho "GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-0)"\n')
    (fake / "nvidia-smi").chmod(0o755)
    env = {
        "PATH": f"{fake}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "backend"),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HOME": str(tmp_path),
        "FLIPSKETCH_MODEL": str(tiny_model_dir),
    }
    result = subprocess.run(
        [sys.executable, "-m", "flipsketch.cli", "doctor"], capture_output=True, text=True, env=env, timeout=120
    )
    out = result.stdout
    assert "present (GPU 0: NVIDIA GeForce RTX 3060" in out and "CPU-only build and cannot use it" in out
    version = torch.__version__.split("+")[0]
    assert f'-m pip install --force-reinstall --no-deps "torch=={version}" --index-url {TORCH_CUDA_INDEX}' in out
    assert "Ready to generate" not in out and "only on the CPU" in out
    assert "install an NVIDIA driver" not in out.lower()
