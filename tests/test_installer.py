"""`python build.py install-backend DIR`: the private backend venv the add-on installs."""

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "backend"))
from flipsketch_setup import install_backend, install_state


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
