"""The machine's NVIDIA GPU and the torch builds for it (standard library only).

Shared by the installer (`flipsketch_setup.py`, run by Blender's Python before
any dependency exists) and `flipsketch doctor`. The PyTorch indexes are pinned
here, in one place: the torch version itself is pinned in pyproject.toml and is
the same for every build.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
PROC_NVIDIA = Path("/proc/driver/nvidia/gpus")


def nvidia_gpu() -> str | None:
    """The first NVIDIA GPU the driver reports (`nvidia-smi -L`, else the Linux
    driver's /proc entries), or None when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[0]
    if PROC_NVIDIA.is_dir() and any(PROC_NVIDIA.iterdir()):
        return "an NVIDIA GPU (driver loaded)"
    return None


def cuda_torch_command(python: str, torch_version: str) -> str:
    """The one command that replaces an installed torch by the CUDA build of the
    same version (e.g. torch_version "2.13.0+cpu")."""
    version = torch_version.split("+")[0]
    return f'"{python}" -m pip install --force-reinstall --no-deps "torch=={version}" --index-url {TORCH_CUDA_INDEX}'
