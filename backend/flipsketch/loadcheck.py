"""`flipsketch loadcheck`: many clients against one server on loopback.

Starts `flipsketch serve` on 127.0.0.1 with the tiny model, lets N client
threads submit M minimal jobs each at once, follows every job to its end and
reports jobs per minute, submit latency percentiles, and whether every job
ended exactly once (none lost, none duplicated). Bounded in count and time;
it never talks to anything but the server it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from flipsketch.client import Client

JOB = {"prompt": "load check", "width": 64, "height": 64, "frames": 2, "steps": 2, "align": False}
SKETCH = {
    "schema": "flipsketch.strokes",
    "version": 1,
    "strokes": [{"points": [[0.2, 0.2], [0.8, 0.8]], "radius": 0.01}],
}


def start_server(workdir: Path, log: IO[bytes] | None = None) -> tuple[subprocess.Popen[bytes], Client]:
    """The server with the tiny model; its output goes to `log` (default: stdout discarded)."""
    from flipsketch.tiny_model import create_tiny_model

    model = create_tiny_model(workdir / "tiny")
    ready = workdir / "ready.json"
    exe = shutil.which("flipsketch", path=str(Path(sys.executable).parent)) or "flipsketch"
    cmd = [exe, "serve", "--port", "0", "--jobs", str(workdir / "jobs"), "--model", str(model)]
    process = subprocess.Popen([*cmd, "--ready-file", str(ready)], stdout=log or subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 120
    while not ready.exists():
        if process.poll() is not None or time.time() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    return process, Client.from_ready_file(ready)


def run(clients: int, jobs_each: int, timeout: float) -> dict[str, float | int | bool]:
    workdir = Path(tempfile.mkdtemp(prefix="flipsketch-loadcheck-"))
    process, client = start_server(workdir)
    latencies: list[float] = []
    submitted: list[str] = []
    lock = threading.Lock()
    try:
        started = time.perf_counter()

        def submitter() -> None:
            own = Client(client.url, client.token)
            for _ in range(jobs_each):
                t0 = time.perf_counter()
                job_id = own.submit(JOB, strokes=SKETCH)["id"]
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    submitted.append(job_id)

        threads = [threading.Thread(target=submitter) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        endings: dict[str, int] = {}
        for job_id in submitted:
            if time.perf_counter() - started > timeout:
                break
            events = list(client.events(job_id, idle_timeout=timeout))
            endings[job_id] = sum(1 for e in events if e["type"] == "state" and e["state"] in ("done", "failed"))
        elapsed = time.perf_counter() - started
        listed = client.jobs()
        server_jobs = [j["id"] for j in listed]
        states = {j["id"]: j["state"] for j in listed}
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    latencies.sort()
    return {
        "clients": clients,
        "jobs": len(submitted),
        "jobs_per_minute": round(len(submitted) / elapsed * 60, 1),
        "submit_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "submit_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        "all_done": all(states.get(j) == "done" for j in submitted),
        "each_ended_once": all(endings.get(j) == 1 for j in submitted),
        "no_duplicates": len(server_jobs) == len(set(server_jobs)) == len(submitted),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flipsketch-loadcheck", description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs-each", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    result = run(args.clients, args.jobs_each, args.timeout)
    print(json.dumps(result, indent=2))
    return 0 if result["all_done"] and result["each_ended_once"] and result["no_duplicates"] else 1


if __name__ == "__main__":
    sys.exit(main())
