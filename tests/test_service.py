"""`flipsketch serve` as a real process on 127.0.0.1, driven by the stdlib client."""

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flipsketch.client import Client, ClientError

from .conftest import ROOT

FAST = {"prompt": "the cat meows", "width": 64, "height": 64, "frames": 4, "steps": 5, "align_iters": 2, "tau_align": 2}
SLOW = {**FAST, "steps": 30, "align": False}
PNG = (ROOT / "examples" / "cat.png").read_bytes()


class Server:
    """One `flipsketch serve` subprocess with its own jobs folder."""

    def __init__(self, model: Path, jobs: Path, *extra: str, launcher: list[str] | None = None) -> None:
        """`launcher` runs `serve ARGS` instead of the installed `flipsketch` command."""
        self.ready = jobs.parent / f"ready-{jobs.name}.json"
        self.ready.unlink(missing_ok=True)
        exe = shutil.which("flipsketch", path=str(Path(sys.executable).parent))
        args = ["serve", "--port", "0", "--jobs", jobs, "--model", model, "--ready-file", self.ready, *extra]
        command = [*(launcher or [exe]), *map(str, args)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while not self.ready.exists():
            assert self.process.poll() is None, self.process.stdout.read().decode()
            assert time.time() < deadline, "server did not start"
            time.sleep(0.1)
        self.info = json.loads(self.ready.read_text())
        self.client = Client(self.info["url"], self.info["token"], timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(tiny_model_dir, tmp_path_factory.mktemp("service") / "jobs")
    yield running
    running.stop()
    assert running.process.returncode is not None and not running.ready.exists()


def raw(server: Server, method: str, path: str, body: bytes | None = None, token: str | None = "default"):
    """Status code and JSON body of a request, bypassing the client's error mapping."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {server.info['token'] if token == 'default' else token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(server.info["url"] + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_job_streams_progress_and_results_match_the_cli(server: Server, tiny_model_dir: Path, tmp_path: Path) -> None:
    job = server.client.submit(FAST, sketch_png=PNG)
    events = list(server.client.events(job["id"]))
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states == ["queued", "running", "done"]
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["step"] for e in progress if e["stage"] == "denoise"] == [1, 2, 3, 4, 5]
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and max(fractions[:-1]) < 1.0 and progress[-1]["stage"] == "done"
    assert events.index(progress[-1]) < events.index(events[-1])  # 100 % only right before "done"
    files = server.client.download(job["id"], tmp_path / "served")
    assert {f.name for f in files} >= {"frame_0000.png", "animation.gif", "animation.mp4", "run.json"}

    exe = shutil.which("flipsketch", path=str(Path(sys.executable).parent))
    cli = [exe, "animate", ROOT / "examples" / "cat.png", "--model", tiny_model_dir, "--out", tmp_path / "cli"]
    cli += ["--prompt", FAST["prompt"], "--width", "64", "--height", "64", "--frames", "4", "--steps", "5"]
    cli += ["--align-iters", "2", "--tau-align", "2"]
    subprocess.run([str(c) for c in cli], check=True, capture_output=True)
    for i in range(4):
        name = f"frame_{i:04d}.png"
        assert (tmp_path / "served" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_job_result_lists_variants_best_first_with_scores(server: Server, tmp_path: Path) -> None:
    from PIL import Image

    from flipsketch.metrics import ChamferScorer

    job = server.client.submit({**FAST, "align": False, "variants": 3, "min_score": 0.3}, sketch_png=PNG)
    assert [e["state"] for e in server.client.events(job["id"]) if e["type"] == "state"][-1] == "done"
    server.client.download(job["id"], tmp_path / "served")
    record = json.loads((tmp_path / "served" / "run.json").read_text())
    assert record["score_method"] == "chamfer"
    sketch = Image.open(tmp_path / "served" / "sketch.png")
    for entry in record["variants"]:
        assert entry["folder"] == f"variant_{entry['seed']}"
        frames = [Image.open(p) for p in sorted((tmp_path / "served" / entry["folder"]).glob("frame_*.png"))]
        assert entry["score"] == pytest.approx(ChamferScorer().score(sketch, frames), abs=1e-6)
        assert entry["hidden"] == (entry["score"] < 0.3)
    scores = [entry["score"] for entry in record["variants"]]
    assert scores == sorted(scores, reverse=True) and sorted(v["seed"] for v in record["variants"]) == [0, 1, 2]
    presets = server.client.capabilities()["quality_presets"]  # for a client's quality menu and tooltips
    assert presets["draft"]["params"] == {"align": False}
    assert presets["paper"]["time_ratio"] > presets["standard"]["time_ratio"] > presets["draft"]["time_ratio"]
    assert server.client.capabilities()["references"] == ["inversion", "released"]


def test_concurrent_clients_keep_queue_order_and_cancel_works(server: Server) -> None:
    long_job = server.client.submit(SLOW, sketch_png=PNG)
    ids: list[str] = []
    clients = [Client(server.info["url"], server.info["token"]) for _ in range(2)]

    def submit(client: Client) -> None:
        ids.append(client.submit(FAST, sketch_png=PNG)["id"])

    threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queued_then_cancelled = server.client.submit(FAST, sketch_png=PNG)
    assert server.client.cancel(queued_then_cancelled["id"])["state"] == "cancelled"

    for event in server.client.events(long_job["id"]):
        if event["type"] == "progress" and event["stage"] == "denoise":
            server.client.cancel(long_job["id"])  # cancel while running
    assert server.client.job(long_job["id"])["state"] == "cancelled"
    assert server.client.job(long_job["id"])["files"] == []

    finished = [server.client.wait(i) for i in ids]
    assert [j["state"] for j in finished] == ["done", "done"]
    by_creation = sorted(finished, key=lambda j: j["created"])
    assert [j["started"] for j in by_creation] == sorted(j["started"] for j in finished)  # FIFO
    assert server.client.job(queued_then_cancelled["id"])["started"] is None  # never ran


def test_every_protected_route_needs_the_token(server: Server) -> None:
    job_id = server.client.jobs()[0]["id"] if server.client.jobs() else "0" * 32
    routes = [
        ("GET", "/v1/capabilities", None),
        ("GET", "/v1/jobs", None),
        ("POST", "/v1/jobs", b"{}"),
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/events", None),
        ("POST", f"/v1/jobs/{job_id}/cancel", b"{}"),
        ("DELETE", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/files/run.json", None),
    ]
    for method, path, body in routes:
        for token in (None, "wrong-token"):
            status, _ = raw(server, method, path, body, token=token)
            assert status == 401, (method, path, token)
    assert raw(server, "GET", "/v1/health", token=None)[0] == 200


def test_path_traversal_finds_nothing(server: Server) -> None:
    job = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
    for path in [
        f"/v1/jobs/{job['id']}/files/../job.json",
        f"/v1/jobs/{job['id']}/files/%2e%2e/sketch.png",
        f"/v1/jobs/{job['id']}/files/..%2F..%2Fjob.json",
        f"/v1/jobs/{job['id']}/files//etc/passwd",
        "/v1/jobs/..%2F..%2Fetc/files/passwd",
        "/v1/jobs/not-a-job-id",
    ]:
        status, body = raw(server, "GET", path)
        assert status == 404, path
        assert b"root:" not in body and b'"params"' not in body


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not valid JSON"),
        (json.dumps({"params": FAST, "sketch_png": "%%%"}).encode(), 422, "not valid base64"),
        (json.dumps({"params": FAST, "sketch_png": base64.b64encode(PNG[:400]).decode()}).encode(), 422, "truncated"),
        (
            json.dumps({"params": FAST, "sketch_png": base64.b64encode(b"GIF89a-junk").decode()}).encode(),
            422,
            "not an image",
        ),
        (json.dumps({"params": {**FAST, "frames": "ten"}, "sketch_png": ""}).encode(), 422, "'frames' must be int"),
        (json.dumps({"params": {**FAST, "motion": 3}, "sketch_png": ""}).encode(), 422, "'motion'"),
        (json.dumps({"params": FAST}).encode(), 422, "exactly one of"),
        (json.dumps({"params": FAST, "strokes": {"schema": "x"}}).encode(), 422, "schema"),
    ],
)
def test_bad_submissions_get_specific_errors(server: Server, body: bytes, status: int, message: str) -> None:
    got, answer = raw(server, "POST", "/v1/jobs", body)
    assert got == status and message in json.loads(answer)["error"]["message"]
    assert server.client.health()["ok"]


def test_oversized_or_unsized_upload_is_refused_before_reading_it(server: Server) -> None:
    for length, status, message in ((str(33 * 2**20), 413, "larger than"), (None, 411, "Content-Length")):
        connection = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=30)
        connection.putrequest("POST", "/v1/jobs")
        connection.putheader("Authorization", f"Bearer {server.info['token']}")
        if length:
            connection.putheader("Content-Length", length)
        else:
            connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()  # the body is never sent: the answer must not wait for it
        response = connection.getresponse()
        assert response.status == status and message in json.loads(response.read())["error"]["message"]
        connection.close()
    assert server.client.health()["ok"]


def test_kill_9_mid_job_then_restart(tiny_model_dir: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    first = Server(tiny_model_dir, jobs)
    job = first.client.submit(SLOW, sketch_png=PNG)
    for event in first.client.events(job["id"]):
        if event["type"] == "progress" and event["stage"] == "denoise":
            first.process.kill()  # SIGKILL: no clean-up at all
            break
    first.process.wait(timeout=30)

    second = Server(tiny_model_dir, jobs)
    try:
        status = second.client.job(job["id"])
        assert status["state"] == "failed" and "stopped" in status["error"]["message"]
        assert status["files"] == [] and not (jobs / job["id"] / "result").exists()
        assert not list((jobs / job["id"]).glob(".result.partial-*"))
        with pytest.raises(ClientError) as info:
            second.client.download(job["id"], tmp_path / "nothing")
        assert "failed" in info.value.message
        assert second.client.wait(second.client.submit(FAST, sketch_png=PNG)["id"])["state"] == "done"
    finally:
        second.stop()


def test_server_exits_with_its_parent(tiny_model_dir: Path, tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    child = Server(tiny_model_dir, tmp_path / "jobs", "--parent-pid", str(parent.pid))
    parent.kill()
    parent.wait()
    child.process.wait(timeout=30)
    assert not child.ready.exists()


def test_port_in_use_is_a_clear_error(server: Server) -> None:
    exe = shutil.which("flipsketch", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [exe, "serve", "--port", str(server.info["port"]), "--jobs", os.devnull + "-unused"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Another program uses that port" in result.stderr


def test_delete_removes_a_job_and_its_files(server: Server) -> None:
    job = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
    jobs_folder = server.ready.parent / "jobs"
    assert (jobs_folder / job["id"] / "result").is_dir()
    server.client.delete(job["id"])
    with pytest.raises(ClientError) as info:
        server.client.job(job["id"])
    assert info.value.status == 404 and job["id"] not in [j["id"] for j in server.client.jobs()]
    assert raw(server, "GET", f"/v1/jobs/{job['id']}/files/run.json")[0] == 404
    assert not (jobs_folder / job["id"]).exists()
