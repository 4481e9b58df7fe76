"""The service under faults and hostile peers, on 127.0.0.1 with real processes:
names that leave a folder, symlinks in results, a second server on one jobs
folder, a restart on a fixed port, Host names, docs, the ready file, the token
file, slow and idle clients, and health while a large drawing is parsed."""

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from flipsketch import listener
from flipsketch.client import Client, ClientError, inside
from flipsketch.errors import InputError
from flipsketch.faultcheck import HOSTILE_NAMES, large_png, many_strokes
from flipsketch.faultcheck import run as faultcheck
from flipsketch.server import write_ready_file
from flipsketch.sketch import MAX_STROKE_POINTS, rasterize_strokes

from .test_service import FAST, PNG, Server, raw

EXE = shutil.which("flipsketch", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(tiny_model_dir, tmp_path_factory.mktemp("faults") / "jobs")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def configured(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server with an extra Host name, the docs on and its token from a file."""
    folder = tmp_path_factory.mktemp("configured")
    (folder / "token").write_text("from-the-file-0123456789\n")
    options = ["--allow-host", "render-box.lan", "--docs", "--token-file", str(folder / "token")]
    running = Server(tiny_model_dir, folder / "jobs", *options)
    yield running
    running.stop()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


class HostileServer:
    """A server that lists `names` as a finished job's files and serves any file."""

    def __init__(self) -> None:
        self.names: list = []
        names = self.names

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"id": "f" * 32, "state": "done", "files": names}).encode()
                body = b"planted" if "/files/" in self.path else body
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.client = Client(f"http://127.0.0.1:{self.httpd.server_address[1]}", "t", retries=0)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "ok/../../x.txt", "x\\..\\..\\y", "D:\\evil.bat", "a/./b", 7])
def test_download_refuses_names_that_leave_the_destination(tmp_path: Path, name) -> None:
    hostile = HostileServer()
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    try:
        hostile.names[:] = ["frame_0000.png", name]
        with pytest.raises(ClientError) as info:
            hostile.client.download("f" * 32, sandbox / "deep" / "result")
        assert "Refused the file name" in info.value.message and repr(name) in info.value.message
        assert files_under(sandbox) == set()  # nothing written, not even the destination's parent
        assert not Path("/tmp/flipsketch-faultcheck-absolute.txt").exists()
    finally:
        hostile.close()


def test_download_keeps_well_formed_nested_names(tmp_path: Path) -> None:
    hostile = HostileServer()
    try:
        hostile.names[:] = ["run.json", "variant_1/frame_0000.png", "variant_1/sequence/seq_0001.png"]
        files = hostile.client.download("f" * 32, tmp_path / "result")
        assert files == [tmp_path / "result" / n for n in hostile.names]
        assert all(f.read_bytes() == b"planted" for f in files)
        hostile.names[:] = ["a.png", "a.png"]
        with pytest.raises(ClientError, match="twice"):
            hostile.client.download("f" * 32, tmp_path / "twice")
        assert not (tmp_path / "twice").exists()
    finally:
        hostile.close()
    assert inside(tmp_path, "a/b.png") == tmp_path / "a" / "b.png"


def test_symlinks_in_a_result_folder_are_never_served(server: Server, tmp_path: Path) -> None:
    job = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
    result = server.ready.parent / "jobs" / job["id"] / "result"
    secret = tmp_path / "secret.txt"
    secret.write_text("root:secret")
    (tmp_path / "secret_dir").mkdir()
    (tmp_path / "secret_dir" / "inner.txt").write_text("root:inner")
    (result / "link.txt").symlink_to(secret)
    (result / "linked_dir").symlink_to(tmp_path / "secret_dir", target_is_directory=True)
    listed = server.client.job(job["id"])["files"]
    assert "link.txt" not in listed and not any(name.startswith("linked_dir") for name in listed)
    for name in ("link.txt", "linked_dir/inner.txt"):
        status, body = raw(server, "GET", f"/v1/jobs/{job['id']}/files/{name}")
        assert status == 404 and b"root:" not in body and json.loads(body)["error"]["message"]
    files = server.client.download(job["id"], tmp_path / "copy")
    assert {f.name for f in files} >= {"run.json", "frame_0000.png"} and not (tmp_path / "copy" / "link.txt").exists()


def test_a_second_server_on_the_same_jobs_folder_is_refused(server: Server, tiny_model_dir: Path) -> None:
    jobs = server.ready.parent / "jobs"
    result = subprocess.run(
        [EXE, "serve", "--port", "0", "--jobs", str(jobs), "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"Another FlipSketch server (pid {server.process.pid}) uses the jobs folder {jobs}" in result.stderr
    assert server.client.health()["ok"]  # the first one is untouched


def test_restart_on_a_fixed_port_right_after_a_shutdown_with_a_client_connected(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = Server(tiny_model_dir, tmp_path / "jobs", "--port", str(port))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v1/health")
    assert connection.getresponse().read()  # keep-alive: the connection stays open
    first.stop()  # the server closes first: its side of the connection waits in TIME_WAIT
    second = Server(tiny_model_dir, tmp_path / "jobs", "--port", str(port))
    try:
        assert second.info["port"] == port and second.client.health()["ok"]
    finally:
        connection.close()
        second.stop()


def test_unknown_host_names_are_refused_and_allowed_ones_answered(configured: Server) -> None:
    running = configured
    for host, status in [
        ("evil.example", 421),
        ("evil.example:80", 421),
        ("127.0.0.1.evil.example", 421),
        ("localhost", 200),
        (f"127.0.0.1:{running.info['port']}", 200),
        (f"localhost:{running.info['port']}", 200),
        ("RENDER-BOX.lan:8765", 200),
    ]:
        connection = http.client.HTTPConnection("127.0.0.1", running.info["port"], timeout=30)
        connection.putrequest("GET", "/v1/jobs", skip_host=True)
        connection.putheader("Host", host)
        connection.putheader("Authorization", f"Bearer {running.info['token']}")
        connection.endheaders()
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        assert response.status == status, host
        if status == 421:
            assert body["error"]["field"] == "Host" and "--allow-host" in body["error"]["hint"]


def test_docs_are_off_by_default_and_behind_the_token_when_on(server: Server, configured: Server) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/v1/docs", "/v1/openapi.json"):
        status, body = raw(server, "GET", path)
        assert status == 404 and json.loads(body)["error"]["message"] == "Not Found", path
    for path in ("/v1/docs", "/v1/redoc", "/v1/openapi.json"):
        assert raw(configured, "GET", path, token=None)[0] == 401
        assert raw(configured, "GET", path)[0] == 200
    assert "/v1/jobs" in json.loads(raw(configured, "GET", "/v1/openapi.json")[1])["paths"]
    assert raw(configured, "GET", "/docs")[0] == 404


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_ready_file_is_private_even_over_a_stale_world_readable_temp_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    stale = tmp_path / ".ready.json.tmp"
    stale.write_text("stale")
    stale.chmod(0o666)
    write_ready_file(ready, {"token": "secret"})
    assert ready.stat().st_mode & 0o777 == 0o600 and json.loads(ready.read_text()) == {"token": "secret"}
    assert not stale.exists()


def test_token_comes_from_a_file_and_stays_off_the_command_line(configured: Server, tmp_path: Path) -> None:
    assert configured.info["token"] == "from-the-file-0123456789"
    assert "from-the-file" not in " ".join(configured.process.args)
    assert raw(configured, "GET", "/v1/jobs", token="from-the-file-0123456789")[0] == 200
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    result = subprocess.run(
        [EXE, "serve", "--port", "0", "--jobs", str(tmp_path / "j2"), "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "is empty" in result.stderr


def test_a_client_connecting_before_the_server_serves_waits_and_is_answered() -> None:
    """The ready file is written at the app's startup, before uvicorn serves the
    socket: a client that connects at once must queue, not be refused."""
    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})
    sock = listener.bind("127.0.0.1", 0)
    early = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=10)
    early.connect()  # nothing serves the socket yet
    early.putrequest("GET", "/ping", skip_host=True)
    early.putheader("Host", "127.0.0.1")
    early.endheaders()
    server = uvicorn.Server(uvicorn.Config(app, http=listener.TimedH11Protocol, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert early.getresponse().read() == b'{"ok":true}'
    finally:
        early.close()
        server.should_exit = True
        thread.join(timeout=10)


def test_a_client_that_never_sends_its_request_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn with the server's protocol, a short head deadline, a trivial app."""
    monkeypatch.setattr(listener, "HEADER_TIMEOUT_S", 0.5)
    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})
    sock = listener.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=listener.TimedH11Protocol, log_level="warning", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        kept.request("GET", "/ping")
        assert kept.getresponse().read() == b'{"ok":true}'
        # closed by the server within the sockets' 5 s timeout, not after the 30 s keep-alive
        assert silent.recv(1) == b"" and slow.recv(1) == b""
        time.sleep(1.0)  # a finished request's connection gets the same deadline for its next head
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            kept.request("GET", "/ping")
            kept.getresponse()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_health_answers_while_large_drawings_are_parsed(server: Server) -> None:
    params = {**FAST, "width": 1024, "height": 1024, "frames": 2, "steps": 2, "align": False}
    bodies = [
        {"params": params, "sketch_png": base64.b64encode(large_png(7000)).decode()},  # 16-bit, 49 Mpx
        {"params": params, "strokes": many_strokes(80, 200)},
    ]
    for body in bodies:
        answers: list = []

        def submit(body=body, answers=answers) -> None:
            answers.append(raw(server, "POST", "/v1/jobs", json.dumps(body).encode()))

        thread = threading.Thread(target=submit)
        submitted = time.perf_counter()
        thread.start()
        slowest = 0.0
        while thread.is_alive():
            started = time.perf_counter()
            assert server.client.health()["ok"]
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.02)
        thread.join()
        parse_s = time.perf_counter() - submitted
        status, answer = answers[0]
        assert status == 202, answer
        server.client.cancel(json.loads(answer)["id"])
        # Parsed on the event loop, health waited for the whole parse (5 s for the
        # PNG, ~20 s for the strokes): a ratio against the same run's parse time
        # holds on a slow or busy machine too.
        assert slowest < max(0.5, parse_s / 4), (slowest, parse_s)


def test_stroke_rasterising_cost_is_bounded() -> None:
    too_many = {"schema": "flipsketch.strokes", "version": 1, "strokes": [{"points": [[0.5, 0.5]] * 1000}] * 251}
    with pytest.raises(InputError) as info:
        rasterize_strokes(too_many, 64, 64)
    assert info.value.message == (
        f"Stroke 250: the drawing has more than {MAX_STROKE_POINTS} points in all; simplify it."
    )
    outside = {"points": [[1.5, 1.5], [2.0, 2.0]], "radius": 0.01}
    half_out = {"points": [[0.5, 0.5], [1.5, 0.5]], "radius": 0.05, "opacity": 0.5}
    drawing = {"schema": "flipsketch.strokes", "version": 1, "strokes": [outside, half_out]}
    image = np.asarray(rasterize_strokes(drawing, 64, 64))
    assert image.shape == (64, 64)
    assert image[32, 40] == 127 and image[32, 63] == 127  # half opacity, up to the right edge
    assert image[10, 10] == 255 and image[32, 20] == 255


def test_faultcheck_quick_run_keeps_files_workers_and_health() -> None:
    """The columns this branch guarantees (hostile JSON's 5xx are the validation layer's)."""
    rows = {row.fault: row for row in faultcheck(quick=True, timeout=60)[0]}
    assert len(rows) == 7
    for row in rows.values():
        assert (row.worker_deaths, row.outside_files, row.jobs_lost, row.health_failed) == (0, 0, 0, 0), row
        assert row.max_health_ms < 1000, row
    assert rows["hostile download"].specific_4xx == rows["hostile download"].inputs == len(HOSTILE_NAMES)
    oversized = rows["oversized drawings"]
    assert (oversized.specific_4xx, oversized.server_errors, oversized.accepted) == (2, 0, 0)
    assert rows["traversal names"].server_errors == rows["traversal names"].plain_text == 0
