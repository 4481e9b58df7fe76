"""The add-on's managed backend in the real bpy module: a busy backend is waited
for (never a second server on the same jobs folder), one whose worker died is
started again, stopping stops the process it started, server.log is rotated,
and the importer refuses run.json names that leave the result folder."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import bpy
import pytest

from .conftest import ROOT
from .test_blender import FAST, SQUARE, addon, preferences, scene  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, pump_until_done

# A stand-in for a server whose job worker has died: it answers health, runs nothing.
DEAD_WORKER = """
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ok": False, "api": 1, "worker": {"alive": False, "running": None}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[1], "w").write(json.dumps({"url": "http://127.0.0.1:%d" % server.server_address[1], "token": "t"}))
server.serve_forever()
"""


def _settings():
    return addon_module("runtime").backend_settings(bpy.context)


@pytest.mark.skipif(os.name == "nt", reason="SIGSTOP freezes the backend")
def test_a_busy_backend_is_waited_for_and_never_doubled(scene, addon) -> None:
    backend, runtime = addon_module("backend"), addon_module("runtime")
    backend.connect(_settings())
    process = backend._server["process"]
    add_camera()
    add_drawing(SQUARE)
    os.kill(process.pid, signal.SIGSTOP)  # it cannot answer health: as when it is busy for long
    try:
        assert bpy.ops.flipsketch.animate() == {"FINISHED"}
        job = scene.flipsketch.jobs[-1]
        deadline = time.time() + 60
        while not job.message.startswith("Backend busy"):
            runtime.pump()
            assert time.time() < deadline and job.state == "connecting", (job.state, job.message)
            time.sleep(0.1)
        assert backend._server["process"] is process  # no second server was started
    finally:
        os.kill(process.pid, signal.SIGCONT)
    pump_until_done()
    assert job.state == "imported", job.message
    assert backend._server["process"] is process and process.poll() is None


def test_a_backend_whose_worker_died_is_restarted_and_stop_stops_it(addon) -> None:
    backend = addon_module("backend")
    settings = _settings()
    backend.stop_managed_server()
    ready = Path(settings.state_dir) / "server.json"
    ready.unlink(missing_ok=True)
    stand_in = subprocess.Popen([sys.executable, "-c", DEAD_WORKER, str(ready)])
    deadline = time.time() + 30
    while not ready.is_file():
        assert time.time() < deadline and stand_in.poll() is None
        time.sleep(0.05)
    backend._server.update(process=stand_in, ready=ready)  # as if the add-on had started it
    client = backend.connect(settings)
    assert stand_in.wait(timeout=30) is not None  # stopped
    started = backend._server["process"]
    assert started is not stand_in and started.poll() is None
    assert client.health()["ok"] and json.loads(ready.read_text())["pid"] == started.pid
    assert client.health()["worker"]["alive"]
    backend.stop_managed_server()
    assert started.poll() is not None and backend._server == {}


def test_server_log_is_rotated(addon, tmp_path: Path) -> None:
    backend = addon_module("backend")
    loud = "import sys\nfor i in range(60000): print('x' * 100, i)"
    process = subprocess.Popen([sys.executable, "-c", loud], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / "server.log"
    backend._copy_log(process.stdout, log)  # 6 MB of output
    process.wait(timeout=30)
    older = tmp_path / "server.log.1"
    assert log.stat().st_size <= backend.LOG_BYTES and older.stat().st_size <= backend.LOG_BYTES
    assert log.read_text().splitlines()[-1] == "x" * 100 + " 59999"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.log", "server.log.1"]


@pytest.mark.parametrize("key", ["../../evil", "/tmp/evil", "variant_0/../../evil", "C:\\evil", ".."])
def test_importer_refuses_run_json_names_that_leave_the_result_folder(addon, tmp_path: Path, key: str) -> None:
    results = tmp_path / "deep" / "results"
    results.mkdir(parents=True)
    (results / "run.json").write_text(json.dumps({"files": {key: ["frame_0000.png"]}, "seeds": [0]}))
    with pytest.raises(addon_module("bundled").client_library().ClientError, match="Refused the file name"):
        addon_module("importer").prepare_results(results, 1)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "results", "run.json"]


class OlderBackend(http.server.BaseHTTPRequestHandler):
    """A remote backend of API `api` (class attribute) that records the jobs submitted to it."""

    api = 1
    submitted: ClassVar[list[dict]] = []

    def _answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._answer(200, {"ok": True, "api": self.api, "worker": {"alive": True, "running": None}})

    def do_POST(self) -> None:
        self.submitted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._answer(400, {"error": {"message": "stand-in: no jobs run here", "hint": ""}})

    def log_message(self, *args) -> None:
        pass


def _job_outcome(backend, key: str) -> dict:
    """The job's last state message (failed or done), read off the add-on's queue."""
    deadline = time.time() + 60
    while time.time() < deadline:
        got, kind, data = backend.messages.get(timeout=deadline - time.time())
        if got == key and (kind == "done" or data.get("state") in ("failed", "cancelled")):
            return {"kind": kind, **data}
    raise TimeoutError(key)


@pytest.mark.parametrize(
    ("api", "drawing", "outcome"),
    [
        (1, "masked", "Layer masks in the drawing need a backend of API v2 or later, and this one speaks v1."),
        (1, "plain", "stand-in: no jobs run here"),  # an older backend still runs drawings of black lines
        (2, "masked", "stand-in: no jobs run here"),
        (
            2,
            "filled",
            "Fills, coloured lines or flat line caps in the drawing need a backend of API v3 or later, "
            "and this one speaks v2.",
        ),
        (2, "gray", "Fills, coloured lines or flat line caps in the drawing need a backend of API v3 or later"),
        (2, "holed mask", "Fills, coloured lines or flat line caps in the drawing need a backend of API v3 or later"),
        (2, "blended", "Layer blend modes in the drawing need a backend of API v3 or later"),
        (3, "filled", "stand-in: no jobs run here"),
        (99, "plain", "The backend speaks API v99, this add-on v1 to v3."),
    ],
)
def test_drawings_are_never_sent_to_a_backend_that_would_draw_them_wrong(
    addon, scene, tmp_path: Path, api: int, drawing: str, outcome: str
) -> None:
    """Layer masks need API v2, fills and gray lines v3: an older backend
    would ignore them and animate a different drawing."""
    backend = addon_module("backend")
    OlderBackend.api, OlderBackend.submitted = api, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OlderBackend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    strokes = {"schema": "flipsketch.strokes", "version": 1, "strokes": SQUARE["strokes"]}
    box = {"points": [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8]], "radius": [0.01] * 3, "fill": 1.0}
    if drawing in ("masked", "holed mask"):
        mask_box = {**box, "fill_id": 1} if drawing == "holed mask" else box
        strokes = {**strokes, "mask_layers": [{"strokes": [mask_box]}], "masks": [[{"layer": 0, "invert": False}]]}
        strokes["strokes"] = [{**stroke, "mask": 0} for stroke in SQUARE["strokes"]]
    elif drawing == "filled":
        strokes = {**strokes, "strokes": [*SQUARE["strokes"], {**box, "opacity": 0.0}]}
    elif drawing == "blended":
        strokes = {**strokes, "strokes": [{**stroke, "layer": 0} for stroke in SQUARE["strokes"]]}
        strokes["layers"] = [{"blend": "MULTIPLY"}]
    elif drawing == "gray":
        strokes = {**strokes, "strokes": [{**stroke, "color": 0.5} for stroke in SQUARE["strokes"]]}
    key = f"api-{api}-{drawing.replace(' ', '-')}"
    try:
        with preferences(addon, backend_mode="REMOTE", remote_url=f"http://127.0.0.1:{server.server_port}"):
            settings = _settings()
        request = {"params": {"prompt": "the plus spins", **FAST}, "strokes": strokes}
        backend.start_job(key, settings, request, tmp_path / "out", 2)
        result = _job_outcome(backend, key)
    finally:
        server.shutdown()
        server.server_close()
    assert result["state"] == "failed" and result["message"].startswith(outcome), result
    sent = "stand-in" in outcome
    assert len(OlderBackend.submitted) == sent  # nothing reaches a backend that would draw it wrong
    if sent:
        assert OlderBackend.submitted[0]["strokes"] == strokes
    assert not (tmp_path / "out").exists()
