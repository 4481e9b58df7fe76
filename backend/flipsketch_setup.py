"""Install the FlipSketch backend into a private virtual environment.

Standard library only: it runs under build.py, and from the Blender add-on
with Blender's own Python. The same choice of torch build serves the
developer set-up (build.py) and a user's backend install.

A crashed or interrupted install is detected and repaired: an INSTALLING
marker is written first and `installed.json` only after the backend imports,
so anything else means "not installed yet". A private venv that cannot run pip
(created but interrupted before pip was bootstrapped, or whose python link
points at a removed interpreter, e.g. after a Blender upgrade) is deleted and
created again. An interrupted download cannot poison a retry: pip downloads
into a temporary folder and caches only complete files, so the next attempt
downloads again what was cut off.

Only prebuilt wheels are installed (pip --only-binary=:all:): a Python that
backend/pyproject.toml does not support, or a pin with no wheel for this Python
and platform, is refused at once with a message naming it, instead of a
quarter-hour source build that may fail anyway.

    python flipsketch_setup.py TARGET_DIR       # install or repair, log in TARGET_DIR/install.log
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

BACKEND = Path(__file__).resolve().parent
sys.path.insert(0, str(BACKEND))  # run as a script by Blender's Python: the package sits beside it
from flipsketch.machine import TORCH_CPU_INDEX, TORCH_CUDA_INDEX, nvidia_gpu  # noqa: E402  (stdlib only)


def reachable(url: str) -> bool:
    """A quick look before handing pip an index: pip retries an unreachable
    index for every package, which turns a one-minute set-up into ten."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (OSError, ValueError):
        return False


def torch_index(system: str = sys.platform) -> tuple[str, list[str]]:
    """Which torch build to install on `system` (a sys.platform value): (label, extra pip arguments).

    PyPI's Linux torch wheels are CUDA builds of several GB; a Linux machine
    without an NVIDIA GPU gets the CPU build from PyTorch's CPU index instead.
    PyPI's Windows wheels are CPU-only, so a Windows machine with an NVIDIA GPU
    gets the CUDA build from PyTorch's CUDA index (both pinned in
    flipsketch/machine.py). The version is the same either way (pinned in
    backend/pyproject.toml). FLIPSKETCH_TORCH_INDEX overrides the choice.
    """
    override = os.environ.get("FLIPSKETCH_TORCH_INDEX")
    if override:
        return f"index {override}", ["--extra-index-url", override]
    gpu = nvidia_gpu()
    if system.startswith("linux") and not gpu:
        if reachable(TORCH_CPU_INDEX):
            return "CPU build (no NVIDIA GPU found)", ["--extra-index-url", TORCH_CPU_INDEX]
        return "CPU build wanted, but the PyTorch index is unreachable: using the configured package index", []
    if system.startswith("linux"):
        return "CUDA build (NVIDIA GPU found)", []
    if system == "win32" and gpu:
        return "CUDA build (NVIDIA GPU found)", ["--extra-index-url", TORCH_CUDA_INDEX]
    return f"PyPI build for {platform.system()}", []


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_problem(venv: Path) -> str | None:
    """Why the venv at `venv` cannot be used for an install, or None if it can:
    its python is missing or a link to a removed interpreter, or it has no pip."""
    python = venv_python(venv)
    if not python.is_file():  # also a dangling link
        target = f" (a link to {python.resolve()}, which no longer exists)" if python.is_symlink() else ""
        return f"its python {python} is missing{target}"
    try:
        result = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its python {python} does not run ({exc})"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or [f"exit code {result.returncode}"]
        return f"it cannot run pip ({lines[-1]})"
    return None


def install_state(target: Path) -> str:
    """ "ok", "missing" or "broken" (interrupted, or made for other sources)."""
    record = target / "installed.json"
    if (target / "INSTALLING").exists():
        return "broken"
    if not record.is_file():
        return "broken" if target.exists() and any(target.iterdir()) else "missing"
    try:
        installed = json.loads(record.read_text())
    except ValueError:
        return "broken"
    ok = installed.get("pyproject_sha256") == pyproject_hash() and venv_python(target / "venv").is_file()
    return "ok" if ok else "broken"


def pyproject_hash() -> str:
    return hashlib.sha256((BACKEND / "pyproject.toml").read_bytes()).hexdigest()


def unsupported_python(version: tuple[int, int] = (sys.version_info[0], sys.version_info[1])) -> str | None:
    """Why pyproject's requires-python (e.g. ">=3.11,<3.14"; operators >=, <)
    refuses Python `version`, or None when it accepts it."""
    requires = tomllib.loads((BACKEND / "pyproject.toml").read_text())["project"]["requires-python"]
    for spec in requires.split(","):
        match = re.fullmatch(r"\s*(>=|<)\s*(\d+)\.(\d+)\s*", spec)
        if match is None:
            raise ValueError(f"requires-python {requires!r} in pyproject.toml: only >=X.Y and <X.Y are understood")
        op, major, minor = match.groups()
        bound = (int(major), int(minor))
        if (op == ">=" and version < bound) or (op == "<" and version >= bound):
            return (
                f"The FlipSketch backend needs Python {requires} and this is Python {version[0]}.{version[1]}: "
                "use a Blender whose Python is supported (Blender 4.5 LTS to 5.3), "
                "or run `python3.11 build.py install-backend DIR` and point the add-on at that backend."
            )
    return None


def unwheeled(pip_output: str) -> list[str]:
    """The requirements pip (with --only-binary=:all:) found no wheel for."""
    return sorted(set(re.findall(r"No matching distribution found for (\S+)", pip_output)))


def install_backend(target: Path, log=print) -> Path:
    """Create or repair TARGET/venv with the backend; return its python."""
    target = Path(target)
    refusal = unsupported_python()
    if refusal:
        raise RuntimeError(refusal)
    state = install_state(target)
    python = venv_python(target / "venv")
    if state == "ok":
        log(f"backend already installed in {target}")
        return python
    target.mkdir(parents=True, exist_ok=True)
    (target / "INSTALLING").write_text("an install started here and has not finished\n")
    (target / "installed.json").unlink(missing_ok=True)
    label, index_args = torch_index()
    log(f"{'repairing' if state == 'broken' else 'installing'} backend in {target}; torch: {label}")
    with open(target / "install.log", "a", encoding="utf-8") as out:

        def step(cmd: list[str]) -> None:
            log("$ " + " ".join(cmd))
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                output = (target / "install.log").read_text(errors="replace")
                missing = unwheeled(output[output.rfind("\n$ ") :])  # this step's output
                if missing:
                    raise RuntimeError(
                        f"No prebuilt package (wheel) of {', '.join(missing)} for Python "
                        f"{platform.python_version()} on {platform.system()} {platform.machine()}: the backend "
                        f"installs only wheels, so nothing was installed. See {target / 'install.log'}."
                    )
                raise RuntimeError(f"Backend install step failed; see {target / 'install.log'}")

        venv = target / "venv"
        problem = venv_problem(venv) if venv.exists() or venv.is_symlink() else "it does not exist yet"
        if problem:
            if venv.exists() or venv.is_symlink():
                message = f"the backend venv {venv} is unusable: {problem}; creating it again"
                log(message)
                out.write(message + "\n")
                if venv.is_symlink():
                    venv.unlink()
                else:
                    shutil.rmtree(venv)
            step([sys.executable, "-m", "venv", str(venv)])
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:"]
        step([*pip, *index_args, str(BACKEND)])
        step([str(python), "-c", "import flipsketch.pipeline, flipsketch.server"])
    record = {"pyproject_sha256": pyproject_hash(), "torch": label, "python": platform.python_version()}
    (target / "installed.json").write_text(json.dumps(record, indent=2))
    (target / "INSTALLING").unlink()
    log(f"backend installed: {python}")
    return python


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        install_backend(Path(sys.argv[1]))
    except RuntimeError as exc:
        sys.exit(str(exc))
