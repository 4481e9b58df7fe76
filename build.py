#!/usr/bin/env python3
"""Set up, test, demo and package FlipSketch for Blender. Standard library only.

    python3.11 build.py demo      set up, then run the main job end to end (headless Blender)
    python3.11 build.py test      set up, then lint and run the test suite
    python3.11 build.py zip       build the installable Blender extension into dist/
    python3.11 build.py install-backend DIR   private backend venv (what the add-on installs)
    python3.11 build.py storyboard IN.blend OUT.blend   animate a .blend's storyboard headless

Set-up creates `.venv/` beside this file with the backend installed editable
and the test tools, all pinned in backend/pyproject.toml. A stamp written last
records what was installed, so a second run does no network work and a broken
install (no stamp) is repaired on the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "backend"))
from flipsketch_setup import install_backend, pyproject_hash, torch_index, venv_python  # noqa: E402  (stdlib-only, beside the backend)

VENV = ROOT / ".venv"
BACKEND = ROOT / "backend"
ADDON = ROOT / "flipsketch_blender"
MANIFEST = ROOT / "blender_manifest.toml"
DIST = ROOT / "dist"
STAMP = VENV / "flipsketch-setup.json"
# Fixed timestamp for files in the zip, so the same sources give the same bytes.
ZIP_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z


def say(message: str) -> None:
    print(f"[build] {message}", flush=True)


def run(cmd: list[str | Path], **kwargs: object) -> None:
    """Run a command, echoing it; stop the build with its exit code on failure."""
    printable = " ".join(str(c) for c in cmd)
    say(f"$ {printable}")
    result = subprocess.run([str(c) for c in cmd], **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        say(f"failed ({result.returncode}): {printable}")
        sys.exit(result.returncode)


def setup() -> Path:
    """Create or repair .venv; skip all work when the stamp matches."""
    if sys.version_info[:2] != (3, 11):
        say(f"Python 3.11 is required (Blender 4.5/5.0 and the bpy wheel use it); this is {platform.python_version()}.")
        say("Run this script with python3.11 (Windows: py -3.11 build.py ...).")
        sys.exit(2)
    label, index_args = torch_index()
    wanted = {
        "pyproject_sha256": pyproject_hash(),
        "torch": label,
        "python": platform.python_version(),
    }
    if STAMP.is_file() and venv_python(VENV).is_file():
        try:
            if json.loads(STAMP.read_text()) == wanted:
                say("environment up to date (.venv)")
                return venv_python(VENV)
        except ValueError:
            pass
    if not venv_python(VENV).is_file():
        say("creating .venv")
        run([sys.executable, "-m", "venv", VENV])
    STAMP.unlink(missing_ok=True)
    say(f"installing backend and test tools; torch: {label}")
    run(
        [venv_python(VENV), "-m", "pip", "install", "--disable-pip-version-check", *index_args, "-e", f"{BACKEND}[dev]"]
    )
    STAMP.write_text(json.dumps(wanted, indent=2))
    return venv_python(VENV)


def cmd_test(extra: list[str]) -> None:
    py = setup()
    run([py, "-m", "ruff", "check", ROOT], cwd=ROOT)
    run([py, "-m", "ruff", "format", "--check", ROOT], cwd=ROOT)
    run([py, "-m", "pytest", "-q", *extra], cwd=ROOT)


def cmd_install_backend(extra: list[str]) -> None:
    if len(extra) != 1:
        say("usage: python build.py install-backend DIR")
        sys.exit(2)
    try:
        install_backend(Path(extra[0]), log=say)
    except RuntimeError as exc:
        say(str(exc))
        sys.exit(1)


def cmd_storyboard(extra: list[str]) -> None:
    py = setup()
    extension = cmd_zip([])
    run([py, ROOT / "examples" / "run_storyboard.py", extension, *extra], cwd=ROOT)


def cmd_demo(extra: list[str]) -> None:
    py = setup()
    extension = cmd_zip([])
    run([py, ROOT / "examples" / "blender_demo.py", extension, *extra], cwd=ROOT)


def blender_ext_cli(py: Path) -> tuple[Path, Path]:
    """Blender's own extension builder and its tag list, from the bpy wheel."""
    out = subprocess.run(
        [py, "-c", "import importlib.util as u; print(u.find_spec('bpy').submodule_search_locations[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    bpy_dir = Path(out.stdout.strip())
    version_dir = next(p for p in bpy_dir.iterdir() if p.is_dir() and p.name[:1].isdigit())
    cli = version_dir / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    tags = version_dir / "scripts" / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return cli, tags


def extension_files() -> dict[str, Path]:
    """Zip member name -> source file: manifest, add-on, backend source."""
    files = {"blender_manifest.toml": MANIFEST}
    for src in sorted(ADDON.rglob("*.py")):
        files[src.relative_to(ADDON).as_posix()] = src
    for name in ("pyproject.toml", "README.md", "flipsketch_setup.py"):
        files[f"backend/{name}"] = BACKEND / name
    for src in sorted((BACKEND / "flipsketch").rglob("*")):
        if src.is_file() and src.suffix in (".py", ".json"):
            files[f"backend/{src.relative_to(BACKEND).as_posix()}"] = src
    return files


def cmd_zip(extra: list[str]) -> Path:
    py = setup()
    cli, tags = blender_ext_cli(py)
    manifest = MANIFEST.read_text(encoding="utf-8")
    ext_id = next(line.split("=")[1].strip().strip('"') for line in manifest.splitlines() if line.startswith("id "))
    version = next(
        line.split("=")[1].strip().strip('"') for line in manifest.splitlines() if line.startswith("version ")
    )
    DIST.mkdir(exist_ok=True)
    target = DIST / f"{ext_id}-{version}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / ext_id
        for name, src in extension_files().items():
            dst = stage / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        for path in sorted(stage.rglob("*"), reverse=True):
            os.utime(path, (ZIP_EPOCH, ZIP_EPOCH))
        partial = DIST / f"{target.stem}.partial.zip"
        run([py, cli, "build", "--source-dir", stage, "--output-filepath", partial, "--valid-tags", tags])
        run([py, cli, "validate", partial])
        os.replace(partial, target)
    say(f"extension zip: {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["setup", "test", "demo", "zip", "install-backend", "storyboard"])
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="passed on (pytest arguments for `test`)")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    commands = {"setup": lambda _: setup(), "test": cmd_test, "demo": cmd_demo, "zip": cmd_zip}
    commands["install-backend"] = cmd_install_backend
    commands["storyboard"] = cmd_storyboard
    commands[args.command](extra)


if __name__ == "__main__":
    main()
