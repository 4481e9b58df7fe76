#!/usr/bin/env python3
"""Set up, test, demo and package FlipSketch for Blender. Standard library only.

    python3.11 build.py demo      set up, then run the main job end to end (headless Blender)
    python3.11 build.py test      set up, then lint, type-check and run the test suite; the
                                  Blender tests run again in the newest tested Blender (bpy 5.3)
    python3.11 build.py zip [OUT.zip]   build the installable Blender extension (default: into dist/)
    python3.11 build.py install-backend DIR   private backend venv (what the add-on installs)
    python3.11 build.py storyboard IN.blend OUT.blend   animate a .blend's storyboard headless

Runs under Python 3.11 or 3.13 and finds the other one (python3.X on PATH, pyenv,
`py -3.X` on Windows, or FLIPSKETCH_PYTHON311 / FLIPSKETCH_PYTHON313).

Set-up creates `.venv/` (Python 3.11) beside this file with the backend installed
editable and the test tools, all pinned in backend/pyproject.toml, and for
`test` also `.venv-bpy5/` (Python 3.13): bpy 5.3 and the few packages the
Blender tests import (the `bpy5-tests` dependency group). Both share one backend
(.venv's) and one tiny model. A stamp written last records what was installed,
so a second run does no network work and a broken install (no stamp) is
repaired on the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "backend"))
from flipsketch_setup import install_backend, pyproject_hash, torch_index, venv_python  # noqa: E402  (stdlib-only, beside the backend)

VENV = ROOT / ".venv"  # Python 3.11: backend, test tools, bpy 4.5 LTS
VENV_BPY5 = ROOT / ".venv-bpy5"  # Python 3.13: bpy 5.3, the newest tested Blender
BACKEND = ROOT / "backend"
ADDON = ROOT / "flipsketch_blender"
MANIFEST = ROOT / "blender_manifest.toml"
DIST = ROOT / "dist"
STAMP = VENV / "flipsketch-setup.json"
TESTS = ROOT / "tests"
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


def find_python(version: tuple[int, int]) -> str:
    """An interpreter of `version`: this one, FLIPSKETCH_PYTHON3XX, python3.X on
    PATH, a pyenv install, or the Windows launcher; exits with advice if none."""
    if sys.version_info[:2] == version:
        return sys.executable
    dotted = f"{version[0]}.{version[1]}"
    name = f"python{dotted}"
    candidates = [[os.environ.get(f"FLIPSKETCH_PYTHON{version[0]}{version[1]}", "")], [name]]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [[str(p)] for p in sorted(pyenv.glob(f"versions/{dotted}.*/bin/{name}"))]
    candidates.append(["py", f"-{dotted}"])
    probe = f"import sys; print(sys.executable if sys.version_info[:2] == {version!r} else '')"
    for command in candidates:
        if not command[0] or not shutil.which(command[0]):
            continue
        try:
            out = subprocess.run([*command, "-c", probe], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    say(f"Python {dotted} is needed and was not found (tried {name}, pyenv, py -{dotted}).")
    say(f"Install it, or set FLIPSKETCH_PYTHON{version[0]}{version[1]} to its interpreter.")
    sys.exit(2)


def up_to_date(stamp: Path, venv: Path, wanted: dict) -> bool:
    if not (stamp.is_file() and venv_python(venv).is_file()):
        return False
    try:
        return json.loads(stamp.read_text()) == wanted
    except ValueError:
        return False


def setup() -> Path:
    """Create or repair .venv (Python 3.11); skip all work when the stamp matches."""
    label, index_args = torch_index()
    wanted = {"pyproject_sha256": pyproject_hash(), "torch": label, "python": "3.11"}
    if up_to_date(STAMP, VENV, wanted):
        say("environment up to date (.venv)")
        return venv_python(VENV)
    if not venv_python(VENV).is_file():
        say("creating .venv (Python 3.11: Blender 4.5 LTS and 5.0 use it)")
        run([find_python((3, 11)), "-m", "venv", VENV])
    STAMP.unlink(missing_ok=True)
    say(f"installing backend and test tools; torch: {label}")
    run(
        [venv_python(VENV), "-m", "pip", "install", "--disable-pip-version-check", *index_args, "-e", f"{BACKEND}[dev]"]
    )
    STAMP.write_text(json.dumps(wanted, indent=2))
    return venv_python(VENV)


def setup_bpy5() -> Path:
    """Create or repair .venv-bpy5 (Python 3.13, Blender 5.3 as a module): the
    `bpy5-tests` group of backend/pyproject.toml, and the backend source itself
    without its dependencies (the Blender tests import a few light modules;
    torch stays in .venv)."""
    stamp = VENV_BPY5 / "flipsketch-setup.json"
    requirements = tomllib.loads((BACKEND / "pyproject.toml").read_text())["dependency-groups"]["bpy5-tests"]
    wanted = {"requirements": requirements, "python": "3.13"}
    if up_to_date(stamp, VENV_BPY5, wanted):
        say("environment up to date (.venv-bpy5)")
        return venv_python(VENV_BPY5)
    if not venv_python(VENV_BPY5).is_file():
        say("creating .venv-bpy5 (Python 3.13: Blender 5.1 and later use it)")
        run([find_python((3, 13)), "-m", "venv", VENV_BPY5])
    stamp.unlink(missing_ok=True)
    say("installing bpy 5.3 and the Blender tests' packages")
    pip = [venv_python(VENV_BPY5), "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:"]
    run([*pip, *requirements])
    run([*pip, "--no-deps", "-e", BACKEND])
    stamp.write_text(json.dumps(wanted, indent=2))
    return venv_python(VENV_BPY5)


def blender_test_files() -> list[Path]:
    """The test modules that use Blender (they import bpy): they run in every tested Blender."""
    return sorted(p for p in TESTS.glob("test_*.py") if "import bpy" in p.read_text(encoding="utf-8"))


def typecheck(py: Path) -> None:
    """basedpyright, standard mode, over the backend and the add-on (pyrightconfig.json; bpy types from
    fake-bpy-module); offline; must report zero errors."""
    run([py.parent / ("basedpyright.exe" if os.name == "nt" else "basedpyright"), "--pythonpath", py], cwd=ROOT)


def parallel_options(extra: list[str]) -> list[str]:
    """pytest-xdist: one worker per core (FLIPSKETCH_TEST_WORKERS to choose), a
    test file's tests on one worker (they share module fixtures: a Blender
    scene, a server); none when the pytest arguments choose workers or `-p no:xdist`."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in extra):
        return []
    workers = os.environ.get("FLIPSKETCH_TEST_WORKERS") or str(os.cpu_count() or 1)
    if not workers.isdigit() or int(workers) < 1:
        say(f"FLIPSKETCH_TEST_WORKERS={workers!r} is not a number of workers: set it to 1 or more, or unset it.")
        sys.exit(2)
    return ["-n", workers, "--dist", "loadfile"]


def suite_environment(model: Path, py: Path, parallel: list[str]) -> dict[str, str]:
    """The tests' environment: the shared tiny model and backend, and with
    parallel workers one torch (OpenMP) thread per worker and per server it
    starts: more threads than cores make OpenMP's waiting threads spin against
    each other (the inversion test took 4x longer)."""
    env = {**os.environ, "FLIPSKETCH_TEST_MODEL": str(model), "FLIPSKETCH_TEST_BACKEND_PYTHON": str(py)}
    if parallel:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(parallel[1])))
    return env


def cmd_test(extra: list[str]) -> None:
    """Lint, type-check, run the suite in .venv (Blender 4.5 LTS), then the
    Blender tests again in .venv-bpy5 (Blender 5.3), against .venv's backend and
    one tiny model made for both runs; each run spread over the cores."""
    parallel = parallel_options(extra)
    py = setup()
    py5 = setup_bpy5()
    run([py, "-m", "ruff", "check", ROOT], cwd=ROOT)
    run([py, "-m", "ruff", "format", "--check", ROOT], cwd=ROOT)
    typecheck(py)
    with tempfile.TemporaryDirectory(prefix="flipsketch-test-") as tmp:
        model = Path(tmp) / "tiny-model"
        run([py, "-m", "flipsketch.cli", "model", "create-tiny", model], cwd=ROOT)
        env = suite_environment(model, py, parallel)
        run([py, "-m", "pytest", "-q", "--durations=20", *parallel, *extra], cwd=ROOT, env=env)
        selected = [a for a in extra if not a.startswith("-") and Path(ROOT, a.split("::")[0]).suffix == ".py"]
        files = [str(f.relative_to(ROOT)) for f in blender_test_files()]
        if selected:  # files named on the command line: only those that use Blender
            files = [a for a in selected if str(Path(a.split("::")[0])) in files]
        options = [a for a in extra if a not in selected]
        if files:
            command = [str(py5), "-m", "pytest", "-q", "--durations=10", *parallel, *options, *files]
            say(f"$ {' '.join(command)}   (Blender 5.3)")
            code = subprocess.run(command, cwd=ROOT, env=env).returncode
            if code == 5 and options:  # pytest: nothing collected; a -k/-m filter chose no Blender test
                say("no Blender test matched the pytest options")
            elif code != 0:
                say(f"failed ({code}): the Blender tests in Blender 5.3")
                sys.exit(code)


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
    target = Path(extra[0]).resolve() if extra else DIST / f"{ext_id}-{version}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / ext_id
        for name, src in extension_files().items():
            dst = stage / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        for path in sorted(stage.rglob("*"), reverse=True):
            os.utime(path, (ZIP_EPOCH, ZIP_EPOCH))
        partial = target.with_name(f".{target.stem}.{os.getpid()}.partial.zip")  # in place once validated
        try:
            run([py, cli, "build", "--source-dir", stage, "--output-filepath", partial, "--valid-tags", tags])
            run([py, cli, "validate", partial])
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    say(f"extension zip: {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["setup", "test", "demo", "zip", "install-backend", "storyboard"])
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="passed on (pytest arguments for `test`)")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    commands = {"setup": lambda _: (setup(), setup_bpy5()), "test": cmd_test, "demo": cmd_demo, "zip": cmd_zip}
    commands["install-backend"] = cmd_install_backend
    commands["storyboard"] = cmd_storyboard
    commands[args.command](extra)


if __name__ == "__main__":
    main()
