"""Connection to the FlipSketch backend, off Blender's main thread.

Each job (an animation, or a LoRA training run) runs in a thread that
connects (starting the managed local server when needed), submits, follows
progress and finishes: an animation downloads and prepares its results, a
training run only reports its LoRA folder. Threads never touch bpy: they put
messages on a queue that `pump()` drains on the main thread (a
`bpy.app.timers` callback), where job items are updated, results imported and
trained LoRAs added to the preferences.
"""

import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent
API_VERSION = 1
START_TIMEOUT_S = 180

messages: "queue.Queue[tuple[str, str, dict]]" = queue.Queue()
_active: dict[str, dict] = {}  # key -> {"cancel": Event, "client": Client, "job_id": str}
_server_lock = threading.Lock()
_server: dict = {}  # the managed process: {"process": Popen, "ready": Path}


def backend_source() -> Path:
    """The backend source: inside the installed extension, or beside it in a checkout."""
    for candidate in (ADDON_DIR / "backend", ADDON_DIR.parent / "backend"):
        if (candidate / "flipsketch" / "client.py").is_file():
            return candidate
    raise FileNotFoundError("The FlipSketch backend source is missing from the add-on.")


def client_library():
    """flipsketch/client.py (standard library only), loaded by path so that
    nothing is added to Blender's sys.path."""
    name = "flipsketch_blender_client"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, backend_source() / "flipsketch" / "client.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class BackendError(Exception):
    """A connection problem the panel shows as it is."""


@dataclass
class Settings:
    """Everything a job thread needs from the preferences, read on the main thread."""

    mode: str  # LOCAL | REMOTE
    url: str
    token: str
    python: str  # interpreter of the managed backend
    state_dir: str  # ready-file and server jobs live here
    model: str
    subfolder: str
    device: str


def connect(settings: Settings):
    """A client for a healthy server of our API version (starting one if managed)."""
    client_module = client_library()
    if settings.mode == "REMOTE":
        client = client_module.Client(settings.url, settings.token or None)
    else:
        client = _managed_client(settings, client_module)
    try:
        health = client.health()
    except client_module.ClientError as exc:
        raise BackendError(str(exc)) from None
    if health.get("api") != API_VERSION:
        raise BackendError(
            f"The backend speaks API v{health.get('api')}, this add-on v{API_VERSION}. "
            "Update the backend with Install backend in the preferences."
        )
    return client


def _managed_client(settings: Settings, client_module):
    state = Path(settings.state_dir)
    ready = state / "server.json"
    with _server_lock:
        if ready.is_file():
            info = json.loads(ready.read_text(encoding="utf-8"))
            client = client_module.Client(info["url"], info["token"], timeout=5, retries=0)
            ours = _server.get("process")
            if ours is None or ours.poll() is None:
                try:
                    client.health()
                    return client_module.Client(info["url"], info["token"])
                except client_module.ClientError:
                    pass
            ready.unlink(missing_ok=True)  # a server that died: start another
        if not Path(settings.python).is_file():
            raise BackendError("The backend is not installed. Open the add-on preferences and click Install backend.")
        state.mkdir(parents=True, exist_ok=True)
        command = [settings.python, "-m", "flipsketch.cli", "serve", "--port", "0", "--ready-file", str(ready)]
        command += ["--jobs", str(state / "jobs"), "--parent-pid", str(os.getpid()), "--device", settings.device]
        if settings.model:
            command += ["--model", settings.model] + (["--subfolder", settings.subfolder] if settings.subfolder else [])
        log = open(state / "server.log", "ab")  # noqa: SIM115  (kept open for the server's lifetime)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _server.update(process=process, ready=ready, log=log)
        deadline = time.time() + START_TIMEOUT_S
        while not ready.is_file():
            if process.poll() is not None:
                raise BackendError(
                    f"The backend stopped while starting (exit {process.returncode}); see {state / 'server.log'}."
                )
            if time.time() > deadline:
                process.terminate()
                raise BackendError(f"The backend did not start within {START_TIMEOUT_S} s; see {state / 'server.log'}.")
            time.sleep(0.1)
        info = json.loads(ready.read_text(encoding="utf-8"))
        return client_module.Client(info["url"], info["token"])


def stop_managed_server() -> None:
    process = _server.get("process")
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    if _server.get("log"):
        _server["log"].close()
    _server.clear()


@dataclass
class Task:
    """What differs between job kinds; the thread that runs them is `_run_job`."""

    submit: Callable  # (client) -> the server's answer {"id": …}; may raise
    finish: Callable  # (client, server job id, post) -> data of the "done" message (no bpy here)
    cancelled: str = ""  # what the job's row says when it was cancelled on the server


def _run_job(key: str, settings: Settings, task: Task) -> None:
    """Connect, submit, follow the server's events and finish: every outcome
    becomes a message for pump()."""
    active = _active[key]

    def post(kind: str, **data) -> None:
        messages.put((key, kind, data))

    try:
        post("state", state="connecting")
        client = connect(settings)
        if active["cancel"].is_set():
            post("state", state="cancelled", message="Cancelled before it was sent.")
            return
        job_id = task.submit(client)["id"]
        active.update(client=client, job_id=job_id)
        if active["cancel"].is_set():
            client.cancel(job_id)
        post("state", state="queued", backend_id=job_id)
        for event in client.events(job_id):
            if event["type"] == "progress":
                extra = {name: event[name] for name in ("step", "total", "loss") if event.get(name) is not None}
                post("progress", stage=event["stage"], fraction=event["fraction"], eta=event.get("eta_s"), **extra)
            elif event["state"] == "running":
                post("state", state="running")
            elif event["state"] in ("failed", "cancelled"):
                error = event.get("error") or {}
                text = " ".join(filter(None, [error.get("message"), error.get("hint")]))
                if not text and event["state"] == "cancelled":
                    text = task.cancelled
                post("state", state=event["state"], message=text)
                return
        post("done", **task.finish(client, job_id, post))
    except BackendError as exc:
        post("state", state="failed", message=str(exc))
    except Exception as exc:  # the client's errors and anything unexpected: show, never crash Blender
        post("state", state="failed", message=f"{exc}")
    finally:
        _active.pop(key, None)


def _start(key: str, settings: Settings, task: Task) -> None:
    _active[key] = {"cancel": threading.Event()}
    thread = threading.Thread(target=_run_job, args=(key, settings, task), name=f"flipsketch-{key}")
    thread.daemon = True
    thread.start()


def start_job(
    key: str, settings: Settings, request: dict, out_dir: Path, timing: int, append_to: tuple[str, int] | None = None
) -> None:
    """Run an animate job in a thread: download the results into `out_dir` and
    prepare them for import; `append_to` = (image sequence folder, next number)
    for an extension."""

    def finish(client, job_id: str, post) -> dict:
        post("state", state="downloading")
        client.download(job_id, out_dir)
        from .importer import prepare_results  # file work only; bpy data is touched in pump()

        return {"prepared": prepare_results(out_dir, timing, append_to)}

    _start(key, settings, Task(submit=lambda client: client.submit(**request), finish=finish))


RESUME_HINT = "Tick Resume to continue it, or Overwrite to start over, or choose another name."


def start_training(
    key: str, settings: Settings, data: str, out: str, config: dict, resume: bool = False, overwrite: bool = False
) -> None:
    """Run a LoRA training job in a thread. `data` and `out` are folders on the
    server's machine; the LoRA is written into `out` there, so nothing is
    downloaded: the "done" message names the folder."""

    def submit(client) -> dict:
        try:
            return client.train(data, out, config, resume=resume, overwrite=overwrite)
        except client_library().ClientError as exc:
            if exc.field == "out" and exc.status == 422:  # the server's hint names command-line flags
                raise BackendError(f"{exc.message} {RESUME_HINT}") from None
            raise

    cancelled = "Cancelled. Its checkpoints are kept: Train LoRA with Resume continues from the last one."
    _start(key, settings, Task(submit=submit, finish=lambda *_: {"lora": out}, cancelled=cancelled))


def cancel_job(key: str) -> bool:
    """Ask the server to cancel (from a short thread: never block the UI)."""
    active = _active.get(key)
    if active is None:
        return False
    active["cancel"].set()
    if "job_id" in active:

        def ask() -> None:
            try:
                active["client"].cancel(active["job_id"])
            except Exception as exc:  # the job's own thread reports the outcome
                messages.put((key, "note", {"message": f"Cancel request failed: {exc}"}))

        threading.Thread(target=ask, daemon=True).start()
    return True


def running_jobs() -> int:
    return len(_active)
