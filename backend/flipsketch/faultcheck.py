"""`python -m flipsketch.faultcheck`: classes of fault against one server on loopback.

Starts `flipsketch serve` on 127.0.0.1 with the tiny model (as loadcheck
does) and runs each class of fault in turn: hostile JSON, traversal names,
many idle connections, slow clients, oversized drawings, concurrent
submit/cancel/delete, and a client download from a server that lists hostile
file names. A thread polls /v1/health all along. After each class a small
probe job must finish (else the worker died), and the sandbox around the
jobs folder is compared with its state before (any new file outside the jobs
folder and the download destination was written where nothing is owned).

It prints one table, a row per class: inputs tried, specific 4xx answers
(JSON naming what was wrong), 5xx, plain-text errors, bad inputs accepted,
worker deaths, files outside owned folders, jobs lost and the slowest health
answer. Bounded in count and time; it stops by itself and talks to nothing
but the servers it started.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flipsketch.client import Client, ClientError
from flipsketch.loadcheck import JOB, SKETCH, start_server

HOSTILE_NAMES = [
    "../../outside.txt",
    "a/../../outside.txt",
    "/tmp/flipsketch-faultcheck-absolute.txt",
    "C:/outside.txt",
    "C:outside.txt",
    "..\\..\\outside.txt",
    "\\\\server\\share\\outside.txt",
    "",
    ".",
    "a//b.txt",
    "nul\x00byte.txt",
]


@dataclass
class Row:
    """One fault class's figures."""

    fault: str
    inputs: int = 0
    specific_4xx: int = 0  # hostile download: refusals with a ClientError
    server_errors: int = 0  # 5xx or no answer; hostile download: the client crashed
    plain_text: int = 0  # error answers that are not JSON naming the problem
    accepted: int = 0  # bad inputs answered 2xx
    worker_deaths: int = 0
    outside_files: int = 0
    jobs_lost: int = 0
    health_failed: int = 0  # health polls not answered 200 during the class
    max_health_ms: float = 0.0
    seconds: float = 0.0


class Target:
    """Raw HTTP to the server under test (no client-side checks in the way)."""

    def __init__(self, client: Client, jobs: Path) -> None:
        self.client, self.jobs = client, jobs
        self.host, port = client.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def request(
        self, method: str, path: str, body: bytes | None = None, token: bool = True, timeout: float = 120
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None when the answer is not JSON); status 0: no answer."""
        headers = {"Authorization": f"Bearer {self.client.token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self._exchange(lambda c: c.request(method, path, body=body, headers=headers), timeout)

    def announce(self, path: str, length: int) -> tuple[int, Any]:
        """A POST that announces `length` bytes and sends none: the answer must not wait for them."""

        def send(connection: http.client.HTTPConnection) -> None:
            connection.putrequest("POST", path)
            connection.putheader("Authorization", f"Bearer {self.client.token}")
            connection.putheader("Content-Length", str(length))
            connection.endheaders()

        return self._exchange(send, 60)

    def _exchange(self, send: Callable[[http.client.HTTPConnection], None], timeout: float) -> tuple[int, Any]:
        """`send` on a new connection, then (status, parsed JSON or None); status 0: no answer."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            send(connection)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            return 0, None
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None


class HealthWatch(threading.Thread):
    """Polls /v1/health every 20 ms; `peak()` is the slowest answer since the last reset."""

    def __init__(self, target: Target) -> None:
        super().__init__(name="health-watch", daemon=True)
        self.target, self.stopping, self.slowest, self.failures = target, threading.Event(), 0.0, 0

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.perf_counter()
            status, _ = self.target.request("GET", "/v1/health", token=False, timeout=30)
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.failures += status != 200
            self.stopping.wait(0.02)

    def peak(self) -> float:
        value, self.slowest = self.slowest, 0.0
        return round(value * 1000, 1)

    def failed(self) -> int:
        value, self.failures = self.failures, 0
        return value


def tally(row: Row, status: int, answer: Any, bad_input: bool = True) -> None:
    """Count one answer to an input that must be refused (or, with
    `bad_input=False`, one that may be accepted)."""
    row.inputs += 1
    error = answer.get("error") if isinstance(answer, dict) else None
    if 400 <= status < 500 and isinstance(error, dict) and error.get("message"):
        row.specific_4xx += 1
    elif status >= 500 or status == 0:
        row.server_errors += 1
    elif bad_input and 200 <= status < 300:
        row.accepted += 1
    if status >= 400 and not (isinstance(error, dict) and error.get("message")):
        row.plain_text += 1


def hostile_json(target: Target, row: Row, quick: bool) -> None:
    params = json.dumps(JOB)
    sketch = json.dumps(SKETCH)
    depth = 2_000 if quick else 100_000
    bodies = [
        f'{{"params": {params[:-1]}, "guidance": NaN}}, "strokes": {sketch}}}',
        f'{{"params": {params[:-1]}, "guidance": Infinity}}, "strokes": {sketch}}}',
        f'{{"params": {params[:-1]}, "guidance": -Infinity}}, "strokes": {sketch}}}',
        f'{{"params": {params[:-1]}, "guidance": 1e308}}, "strokes": {sketch}}}',
        f'{{"params": {params[:-1]}, "guidance": 1e999}}, "strokes": {sketch}}}',
        f'{{"params": {params[:-1]}, "align_lr": NaN}}, "strokes": {sketch}}}',
        f'{{"params": {params[:-1]}, "seed": {10**400}}}, "strokes": {sketch}}}',
        f'{{"params": {params[:25]}',
        json.dumps({"params": {**JOB, "prompt": "\ud800"}, "strokes": SKETCH}),
        json.dumps({"params": {**JOB, "prompt": "x" * 200_000}, "strokes": SKETCH}),
        "[" * depth + "]" * depth,
        '{"params": ' + "[" * depth + "]" * depth + "}",
        json.dumps({"params": [], "strokes": SKETCH}),
        json.dumps({"params": {**JOB, "frames": "ten"}, "strokes": SKETCH}),
        json.dumps({"params": JOB, "strokes": {**SKETCH, "strokes": [{"points": "0,0 1,1"}]}}),
        json.dumps({"params": JOB, "strokes": {**SKETCH, "strokes": [{"points": [[0, 0], [1, 1]], "radius": "1"}]}}),
        json.dumps({"params": JOB, "strokes": {**SKETCH, "strokes": [{"points": [[0, 0], [1, 1]], "opacity": [1]}]}}),
        json.dumps({"params": JOB, "strokes": {**SKETCH, "strokes": [{"points": [[0, "a"], [1, 1]]}]}}),
        json.dumps({"params": JOB, "strokes": {**SKETCH, "strokes": [{"points": [[[0, 0]]]}]}}),
        json.dumps({"params": JOB, "strokes": SKETCH, "fps": 10.5}),
        json.dumps({"params": JOB, "strokes": SKETCH, "segment": {"first_index": -1}}),
        json.dumps({"params": JOB, "strokes": SKETCH, "model": ["x"]}),
        json.dumps({"params": JOB, "sketch_png": 12}),
        '{"params": ' + params + ', "strokes": ' + sketch + ', "params": 1}',
    ]
    for body in bodies:
        status, answer = target.request("POST", "/v1/jobs", body.encode("utf-8", "surrogatepass"))
        tally(row, status, answer)
        if isinstance(answer, dict) and status == 202:
            target.request("DELETE", f"/v1/jobs/{answer['id']}")
    status, answer = target.request("GET", "/v1/jobs")  # one bad record must not break the listing
    tally(row, status, answer, bad_input=False)


def traversal_names(target: Target, row: Row, quick: bool) -> None:
    job = target.client.wait(target.client.submit(JOB, strokes=SKETCH)["id"])
    paths = [
        f"/v1/jobs/{job['id']}/files/../job.json",
        f"/v1/jobs/{job['id']}/files/%2e%2e/sketch.png",
        f"/v1/jobs/{job['id']}/files/..%2F..%2F.server.lock",
        f"/v1/jobs/{job['id']}/files//etc/passwd",
        f"/v1/jobs/{job['id']}/files/C:%5Cwindows%5Cwin.ini",
        "/v1/jobs/..%2F..%2Fetc/files/passwd",
        "/v1/jobs/%2e%2e",
        "/v1/jobs/" + "0" * 31 + "/files/run.json",
    ]
    for path in paths:
        status, answer = target.request("GET", path)
        tally(row, status, answer)
    for path in ("/v1/jobs/..%2F..%2Fjobs", f"/v1/jobs/{job['id']}%2F.."):
        status, answer = target.request("DELETE", path)
        tally(row, status, answer)
    outside = target.jobs / ".." / "outside"  # in the sandbox, beside the jobs folder
    body = {"data": str(outside / ".." / ".." / "missing"), "out": str(outside / "run")}
    status, answer = target.request("POST", "/v1/train", json.dumps(body).encode())
    tally(row, status, answer)
    if isinstance(answer, dict) and status == 202:
        target.client.cancel(answer["id"])
    body = {"params": JOB, "strokes": SKETCH, "model": "../../../etc", "subfolder": "../../.."}
    status, answer = target.request("POST", "/v1/jobs", json.dumps(body).encode())
    if status == 202:  # refused by the worker when it loads the model: must end failed, not crash
        row.inputs += 1
        row.specific_4xx += target.client.wait(answer["id"])["state"] == "failed"
    else:
        tally(row, status, answer)


def idle_connections(target: Target, row: Row, quick: bool) -> None:
    """Many connections that send nothing (each holds a socket on the server)."""
    count = 40 if quick else 200
    sockets = []
    for _ in range(count):
        try:
            sockets.append(socket.create_connection((target.host, target.port), timeout=10))
        except OSError:
            break
    row.inputs = len(sockets)
    time.sleep(1.0 if quick else 3.0)
    status, answer = target.request("GET", "/v1/capabilities")
    tally(row, status, answer, bad_input=False)
    for sock in sockets:
        sock.close()


def slow_clients(target: Target, row: Row, quick: bool) -> None:
    """Clients that send their request head one byte at a time, and never finish."""
    count = 8 if quick else 40
    head = f"POST /v1/jobs HTTP/1.1\r\nHost: {target.host}\r\nAuthorization: Bearer {target.client.token}\r\n"
    sockets = [socket.create_connection((target.host, target.port), timeout=10) for _ in range(count)]
    row.inputs = count
    deadline = time.time() + (2.0 if quick else 15.0)
    position = 0
    while time.time() < deadline and position < len(head):
        for sock in sockets:
            with contextlib.suppress(OSError):  # dropped by the server: the point
                sock.sendall(head[position].encode())
        position += 1
        time.sleep(0.2)
    status, answer = target.request("GET", "/v1/capabilities")
    tally(row, status, answer, bad_input=False)
    for sock in sockets:
        sock.close()


def large_png(side: int) -> bytes:
    """A 16-bit PNG of side² pixels: white with one black line (compresses to little)."""
    image = np.full((side, side), 65535, dtype=np.uint16)
    image[side // 2 - 4 : side // 2 + 4, side // 8 : -side // 8] = 0
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def many_strokes(count: int, points: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    strokes = []
    for _ in range(count):
        walk = np.cumsum(rng.normal(0, 0.03, (points, 2)), axis=0) + rng.uniform(0.2, 0.8, 2)
        strokes.append({"points": np.clip(walk, 0, 1).round(5).tolist(), "radius": 0.004})
    return {"schema": "flipsketch.strokes", "version": 1, "strokes": strokes}


def oversized(target: Target, row: Row, quick: bool, watch: HealthWatch) -> float:
    """The largest drawings the server takes, while health is polled; then
    refusals (too many pixels, too large a body). Returns the slowest health
    answer (ms) during the accepted large requests."""
    params = {**JOB, "width": 1024, "height": 1024}
    side = 3000 if quick else 7000
    large = [
        {"params": params, "sketch_png": base64.b64encode(large_png(side)).decode()},
        {"params": params, "strokes": many_strokes(80, 200)},
    ]
    watch.peak()
    for body in large:
        status, answer = target.request("POST", "/v1/jobs", json.dumps(body).encode())
        tally(row, status, answer, bad_input=False)
        if status == 202:
            target.client.cancel(answer["id"])
    slowest = watch.peak()
    bomb = Image.new("1", (12_000, 12_000), 1)
    buffer = io.BytesIO()
    bomb.save(buffer, "PNG")
    body = {"params": JOB, "sketch_png": base64.b64encode(buffer.getvalue()).decode()}
    status, answer = target.request("POST", "/v1/jobs", json.dumps(body).encode())
    tally(row, status, answer)
    status, answer = target.announce("/v1/jobs", 33 * 2**20)
    tally(row, status, answer)
    return slowest


def concurrent_submit_cancel_delete(target: Target, row: Row, quick: bool) -> None:
    threads, rounds = (3, 3) if quick else (6, 8)
    kept: list[str] = []
    lock = threading.Lock()

    def churn(index: int) -> None:
        own = Client(target.client.url, target.client.token)
        for k in range(rounds):
            job_id = own.submit(JOB, strokes=SKETCH)["id"]
            action = (index + k) % 3
            try:
                if action == 1:
                    own.cancel(job_id)
                elif action == 2:
                    own.delete(job_id)
                    continue
            except ClientError:
                pass
            with lock:
                kept.append(job_id)

    workers = [threading.Thread(target=churn, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    row.inputs = threads * rounds
    for job_id in kept:
        try:
            state = target.client.wait(job_id)["state"]
        except ClientError:
            state = "missing"
        row.jobs_lost += state not in ("done", "cancelled")


def hostile_download(sandbox: Path, row: Row) -> None:
    """Client.download from a server that lists names leaving the destination."""
    names: list[str] = []

    class Hostile(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"id": "f" * 32, "state": "done", "files": names}).encode()
            if "/files/" in self.path:
                body = b"planted"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_address[1]}", "token", retries=0)
        for name in HOSTILE_NAMES:
            names[:] = ["frame_0000.png", name]
            dest = sandbox / "downloads" / "deep" / "result"
            try:
                client.download("f" * 32, dest)
                row.accepted += 1
            except ClientError:
                row.specific_4xx += 1
            except Exception:  # the client itself failed (counted with the crashes)
                row.server_errors += 1
            row.inputs += 1
            shutil.rmtree(dest, ignore_errors=True)
            absolute = Path(HOSTILE_NAMES[2])
            if absolute.exists():
                row.outside_files += 1
                absolute.unlink()
    finally:
        server.shutdown()
        server.server_close()


def snapshot(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def worker_alive(target: Target, timeout: float) -> bool:
    """Whether the worker still runs jobs: health says so (when it reports it)
    and a probe job finishes."""
    health = target.request("GET", "/v1/health", token=False)[1] or {}
    if health.get("worker", {}).get("alive") is False:
        return False
    probe = target.client.submit(JOB, strokes=SKETCH)["id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if target.client.job(probe)["state"] in ("done", "failed", "cancelled"):
            return target.client.job(probe)["state"] == "done"
        time.sleep(0.1)
    return False


def run(quick: bool = False, timeout: float = 120) -> tuple[list[Row], int]:
    """Every fault class in turn; the rows, and how many unhandled request errors the server logged."""
    workdir = Path(tempfile.mkdtemp(prefix="flipsketch-faultcheck-"))
    sandbox = workdir / "sandbox"
    (sandbox / "downloads").mkdir(parents=True)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115  (open while the server runs)
    process, client = start_server(workdir, log)
    target = Target(client, workdir / "jobs")
    watch = HealthWatch(target)
    watch.start()
    rows: list[Row] = []
    dead = False
    try:
        before = snapshot(workdir)
        classes: list[tuple[str, Callable[[Row], Any]]] = [
            ("hostile JSON", lambda row: hostile_json(target, row, quick)),
            ("traversal names", lambda row: traversal_names(target, row, quick)),
            ("idle connections", lambda row: idle_connections(target, row, quick)),
            ("slow clients", lambda row: slow_clients(target, row, quick)),
            ("oversized drawings", lambda row: oversized(target, row, quick, watch)),
            ("submit/cancel/delete", lambda row: concurrent_submit_cancel_delete(target, row, quick)),
            ("hostile download", lambda row: hostile_download(sandbox, row)),
        ]
        for name, fault in classes:
            row = Row(name)
            watch.peak()
            watch.failed()
            started = time.perf_counter()
            largest = fault(row)
            row.seconds = round(time.perf_counter() - started, 1)
            row.health_failed = watch.failed()
            row.max_health_ms = largest if largest is not None else watch.peak()
            if not dead and not worker_alive(target, timeout):
                row.worker_deaths, dead = 1, True
            owned = workdir / "jobs"
            after = snapshot(workdir)
            row.outside_files += sum(1 for p in after - before if not p.is_relative_to(owned))
            before = after
            rows.append(row)
            if process.poll() is not None:
                raise SystemExit(f"the server died during '{name}'")
    finally:
        watch.stopping.set()
        process.terminate()
        process.wait(timeout=60)
        log.close()
        tracebacks = (workdir / "server.log").read_bytes().count(b"Exception in ASGI application")
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, tracebacks


def table(rows: list[Row]) -> str:
    headers = list(asdict(rows[0]))
    cells = [headers] + [[str(v) for v in asdict(row).values()] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flipsketch-faultcheck", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller inputs (for tests)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a probe job may take")
    args = parser.parse_args(argv)
    rows, tracebacks = run(args.quick, args.timeout)
    print(table(rows))
    print(f"unhandled request errors in the server log: {tracebacks}")
    clean = all(
        r.server_errors == r.plain_text == r.accepted == r.worker_deaths == r.outside_files == r.jobs_lost == 0
        for r in rows
    )
    return 0 if clean and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
