"""`flipsketch doctor`: what this machine can do, and what to fix when it can't.

Each check yields a Finding; a finding marked `blocking` means no animation can
be generated, which makes the command exit non-zero so scripts and the Blender
add-on can rely on the exit code.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from flipsketch import PUBLISHED_MODEL, PUBLISHED_SUBFOLDER
from flipsketch.machine import cuda_torch_command, nvidia_gpu
from flipsketch.models import COMPONENTS, default_source, hub_cache_dir


@dataclass
class Finding:
    topic: str
    value: str
    advice: str = ""
    blocking: bool = False
    unused_gpu: bool = False  # generation works, but on the CPU although a GPU is there


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_findings() -> list[Finding]:
    try:
        import torch
    except ImportError as exc:
        return [Finding("torch", f"not importable ({exc})", "Run `python build.py install-backend DIR`.", True)]
    cuda_build = torch.version.cuda
    rocm_build = getattr(torch.version, "hip", None)
    build = f"CUDA {cuda_build}" if cuda_build else f"ROCm {rocm_build}" if rocm_build else "CPU only"
    out = [Finding("torch", f"{torch.__version__} ({build} build)")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out.append(
                Finding(
                    f"gpu {i}", f"{torch.cuda.get_device_name(i)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
                )
            )
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append(Finding("gpu", "Apple MPS available"))
    elif (gpu := nvidia_gpu()) and not cuda_build:
        out.append(
            Finding(
                "gpu",
                f"present ({gpu}), but the installed torch {torch.__version__} is a CPU-only build and cannot use it",
                f"Install the CUDA build of torch: {cuda_torch_command(sys.executable, torch.__version__)}",
                unused_gpu=True,
            )
        )
    else:
        advice = (
            "No GPU: generation runs on the CPU, minutes per clip at full size. "
            "Install an NVIDIA driver and the CUDA build of torch, or connect to a remote FlipSketch server."
        )
        if cuda_build:
            advice = "This torch has CUDA but no GPU/driver is visible: check `nvidia-smi`. " + advice
        out.append(Finding("gpu", "none (CPU only)", advice))
    return out


def _model_findings() -> list[Finding]:
    cache = hub_cache_dir()
    out = [Finding("model cache", str(cache))]
    present = (
        sorted(p.name[len("models--") :].replace("--", "/") for p in cache.glob("models--*")) if cache.is_dir() else []
    )
    out.append(Finding("cached models", ", ".join(present) if present else "none"))
    source = default_source()
    folder = Path(source.name).expanduser()
    if folder.is_dir():
        missing = [c for c in COMPONENTS if not (folder / (source.subfolder or "") / c).is_dir()]
        if missing:
            out.append(
                Finding(
                    "model",
                    f"{folder} lacks {', '.join(missing)}",
                    "Point FLIPSKETCH_MODEL at a complete model folder.",
                    True,
                )
            )
        else:
            out.append(Finding("model", f"{folder} (complete)"))
    elif source.name in present:
        out.append(Finding("model", f"{source.describe()} (cached)"))
    else:
        out.append(
            Finding(
                "model",
                f"{source.describe()} not downloaded",
                f"Run `{source.download_command()}`, or set FLIPSKETCH_MODEL to a model folder. "
                f"(Default: {PUBLISHED_MODEL} folder {PUBLISHED_SUBFOLDER}.)",
                True,
            )
        )
    return out


def run_checks() -> list[Finding]:
    findings = [Finding("python", f"{platform.python_version()} ({sys.executable})")]
    if sys.version_info[:2] not in ((3, 11), (3, 13)):
        findings[0].advice = (
            "The backend runs on Python 3.11 (Blender 4.5 LTS, 5.0) and 3.13 (Blender 5.1 and later); "
            "it is tested on 3.11."
        )
    findings += _torch_findings()
    for package in ("diffusers", "transformers", "peft", "accelerate", "huggingface-hub"):
        version = _version(package)
        findings.append(
            Finding(
                package,
                version or "missing",
                "" if version else "Reinstall the backend (`python build.py install-backend DIR`).",
                version is None,
            )
        )
    findings += _model_findings()
    return findings


def report(findings: list[Finding]) -> str:
    width = max(len(f.topic) for f in findings)
    lines = []
    for f in findings:
        mark = "FAIL" if f.blocking else ("warn" if f.advice else " ok ")
        lines.append(f"[{mark}] {f.topic.ljust(width)}  {f.value}")
        if f.advice:
            lines.append(f"       {' ' * width}  -> {f.advice}")
    blocking = sum(f.blocking for f in findings)
    if blocking:
        lines.append(f"{blocking} problem(s) prevent generation; see FAIL lines.")
    elif any(f.unused_gpu for f in findings):
        lines.append("Generation works, but only on the CPU: the GPU is unused until torch is replaced (see above).")
    else:
        lines.append("Ready to generate.")
    return "\n".join(lines)
