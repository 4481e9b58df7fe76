"""Connection to the FlipSketch backend, off Blender's main thread.

Each job (an animation, or a LoRA training run) runs in a thread that
connects (starting the managed local server when needed), submits, follows
progress and finishes: an animation downloads and prepares its results, a
training run only reports its LoRA folder. Threads never touch bpy: they put
messages on a queue that `pump()` drains on the main thread (a
`bpy.app.timers` callback), where job items are updated, results imported and
trained LoRAs added to the preferences.

The managed server is this Blender's own process: while it lives, no second
one is started (two servers on one jobs folder would re-run each other's
jobs); when it does not answer, the job waits and says "Backend busy". A
server whose job worker has died is stopped and started again. Its output goes
to `server.log`, rotated at LOG_BYTES.
"""

import contextlib
import json
import logging
import logging.handlers
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bundled import client_library
from .importer import prepare_results

API_VERSION = 3  # the newest backend API this add-on speaks (v3: strokes may carry colours and fills)
OLDEST_API = 1  # the oldest it accepts, for jobs that need nothing newer
MASKS_API = 2  # the first that applies layer masks (older backends ignore them)
FILLS_API = 3  # the first that paints fills, gray lines, blend modes and a "frame" (older ones: black lines only)
V3_FIELDS = ("color", "fill", "fill_id", "start_cap", "end_cap")  # stroke fields of API v3 (a mask's "fill" is v2's)
START_TIMEOUT_S = 180
OFFLINE_ADVICE = (
    "Blender's online access is off, so FlipSketch downloads nothing: "
    "turn on Allow Online Access in Preferences › System › Network."
)
BUSY_TIMEOUT_S = 300  # how long a job waits for its own managed server to answer
LOG_BYTES = 2 * 2**20  # server.log is rotated beyond this; one older file is kept

messages: "queue.Queue[tuple[str, str, dict]]" = queue.Queue()
_active: dict[str, dict] = {}  # key -> {"cancel": Event, "client": Client, "job_id": str}
_server_lock = threading.Lock()
_server: dict = {}  # the managed process: {"process": Popen, "ready": Path}


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
    online: bool  # Blender's "Allow Online Access" (bpy.app.online_access)


def server_environment(online: bool) -> dict[str, str]:
    """The managed server's environment: with Blender's online access off the
    Hugging Face client is offline (HF_HUB_OFFLINE), so a model loads only
    from a folder or the local cache and nothing is downloaded."""
    return {**os.environ, "HF_HUB_OFFLINE": "1"} if not online else dict(os.environ)


def offline_failure(message: str, online: bool) -> str:
    """A failed job's message, with how to allow downloads when the failure is
    a model the (offline) backend could not download."""
    if online or "could not be downloaded" not in message:
        return message
    return f"{message} {OFFLINE_ADVICE} Or set the model to a downloaded model folder."


def connect(
    settings: Settings, on_wait: Callable[[str], None] | None = None, needs_api: int = OLDEST_API, needs_why: str = ""
):
    """A client for a healthy server of our API version (starting one if
    managed). `on_wait(message)` is called while the managed server is busy."""
    client_module = client_library()
    if settings.mode == "REMOTE":
        client = client_module.Client(settings.url, settings.token or None)
    else:
        client = _managed_client(settings, client_module, on_wait or (lambda message: None))
    try:
        health = client.health()
    except client_module.ClientError as exc:
        raise BackendError(str(exc)) from None
    api = health.get("api")
    if not isinstance(api, int) or not OLDEST_API <= api <= API_VERSION:
        raise BackendError(
            f"The backend speaks API v{api}, this add-on v{OLDEST_API} to v{API_VERSION}. "
            "Update the backend with Install backend in the preferences."
        )
    if api < needs_api:
        raise BackendError(
            f"{needs_why} need a backend of API v{needs_api} or later, and this one speaks v{api}. Update it "
            "(Install backend in the preferences; a remote server: its flipsketch), or do without them."
        )
    return client


def _own_process_alive(ready: Path) -> bool:
    process = _server.get("process")
    return process is not None and process.poll() is None and _server.get("ready") == ready


def _managed_client(settings: Settings, client_module, on_wait: Callable[[str], None]):
    state = Path(settings.state_dir)
    ready = state / "server.json"
    with _server_lock:
        if _server.get("process") is not None and _server.get("ready") != ready:
            stop_managed_server()  # the backend folder was changed in the preferences
        if _server.get("process") is not None and _server.get("online") != settings.online:
            stop_managed_server()  # started before online access changed: restart with the new setting
        waited_since = None
        while True:
            health, info = None, {}  # info: the ready file's, once read
            if ready.is_file():
                info = json.loads(ready.read_text(encoding="utf-8"))
                probe = client_module.Client(info["url"], info["token"], timeout=5, retries=0)
                with contextlib.suppress(client_module.ClientError):
                    health = probe.health()
            if health is not None and health.get("worker", {}).get("alive", True):
                return client_module.Client(info["url"], info["token"])
            if health is not None and _own_process_alive(ready):
                stop_managed_server()  # it answers but runs no jobs: start it again
            elif _own_process_alive(ready):  # starting, or too busy to answer: never start a second one
                waited_since = waited_since or time.time()
                if time.time() - waited_since > BUSY_TIMEOUT_S:
                    raise BackendError(
                        f"The backend (pid {_server['process'].pid}) has not answered for {BUSY_TIMEOUT_S} s; "
                        f"see {state / 'server.log'}. Try again later, or restart Blender to stop it."
                    )
                on_wait(f"Backend busy: waiting for it to answer ({time.time() - waited_since:.0f} s).")
                time.sleep(1.0)
                continue
            elif health is not None:
                raise BackendError(
                    f"The backend at {info['url']} (pid {info.get('pid')}) no longer runs jobs, and it was "
                    "started by another Blender. Stop that process, then try again."
                )
            ready.unlink(missing_ok=True)  # a server that died: start another
            break
        if not Path(settings.python).is_file():
            raise BackendError("The backend is not installed. Open the add-on preferences and click Install backend.")
        state.mkdir(parents=True, exist_ok=True)
        command = [settings.python, "-m", "flipsketch.cli", "serve", "--port", "0", "--ready-file", str(ready)]
        command += ["--jobs", str(state / "jobs"), "--parent-pid", str(os.getpid()), "--device", settings.device]
        if settings.model:
            command += ["--model", settings.model] + (["--subfolder", settings.subfolder] if settings.subfolder else [])
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=server_environment(settings.online)
        )
        log = threading.Thread(target=_copy_log, args=(process.stdout, state / "server.log"), daemon=True)
        log.start()
        _server.update(process=process, ready=ready, online=settings.online)
        deadline = time.time() + START_TIMEOUT_S
        while not ready.is_file():
            if process.poll() is not None:
                log.join(timeout=5)  # its last words, e.g. another server holds the jobs folder
                lines = (state / "server.log").read_text(encoding="utf-8", errors="replace").splitlines()
                raise BackendError(
                    f"The backend stopped while starting (exit {process.returncode}): {' '.join(lines[-2:])} "
                    f"See {state / 'server.log'}."
                )
            if time.time() > deadline:
                process.terminate()
                raise BackendError(f"The backend did not start within {START_TIMEOUT_S} s; see {state / 'server.log'}.")
            time.sleep(0.1)
        info = json.loads(ready.read_text(encoding="utf-8"))
        return client_module.Client(info["url"], info["token"])


def _copy_log(stream, path: Path) -> None:
    """The managed server's output -> `path`, rotated at LOG_BYTES (runs
    until the process closes its output)."""
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=1, encoding="utf-8")
    try:
        for line in stream:
            handler.emit(logging.makeLogRecord({"msg": line.decode("utf-8", "replace").rstrip("\r\n")}))
    finally:
        handler.close()


def stop_managed_server() -> None:
    """Stop the server process this add-on started (and only that one)."""
    process = _server.get("process")
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _server.clear()


@dataclass
class Task:
    """What differs between job kinds; the thread that runs them is `_run_job`."""

    submit: Callable  # (client) -> the server's answer {"id": …}; may raise
    finish: Callable  # (client, server job id, post) -> data of the "done" message (no bpy here)
    cancelled: str = ""  # what the job's row says when it was cancelled on the server
    needs_api: int = OLDEST_API  # the oldest backend API that runs it
    needs_why: str = ""  # what needs that API, for the error: "Layer masks"


def _run_job(key: str, settings: Settings, task: Task) -> None:
    """Connect, submit, follow the server's events and finish: every outcome
    becomes a message for pump()."""
    active = _active[key]

    def post(kind: str, **data) -> None:
        messages.put((key, kind, data))

    try:
        post("state", state="connecting")
        client = connect(
            settings, lambda message: post("state", state="connecting", message=message), task.needs_api, task.needs_why
        )
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
                post("state", state=event["state"], message=offline_failure(text, settings.online))
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
        return {"prepared": prepare_results(out_dir, timing, append_to)}  # files only: bpy data waits for pump()

    needs_api, needs_why = drawing_needs(request.get("strokes") or {})
    task = Task(submit=lambda client: client.submit(**request), finish=finish, needs_api=needs_api, needs_why=needs_why)
    _start(key, settings, task)


def drawing_needs(drawing: dict) -> tuple[int, str]:
    """The oldest backend API that draws `drawing` (the stroke schema) as
    Blender shows it, and what needs it (for the error): fills or gray lines
    (a stroke with a V3_FIELDS field, or a mask layer's stroke with a
    fill_id), layer blend modes ("layers") and strokes crossing the frame's
    edge ("frame", and points beyond the older -1..2 range) need FILLS_API,
    layer masks MASKS_API."""
    mask_strokes = [stroke for layer in drawing.get("mask_layers", []) for stroke in layer["strokes"]]
    if any(name in stroke for stroke in drawing.get("strokes", []) for name in V3_FIELDS) or any(
        "fill_id" in stroke for stroke in mask_strokes
    ):
        return FILLS_API, "Fills, coloured lines or flat line caps in the drawing"
    if drawing.get("layers"):
        return FILLS_API, "Layer blend modes in the drawing"
    if drawing.get("frame"):
        return FILLS_API, "Strokes that cross the camera frame's edge"
    if drawing.get("masks"):
        return MASKS_API, "Layer masks in the drawing"
    return OLDEST_API, ""


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


def is_running(key: str) -> bool:
    """Whether the job's thread is still at work."""
    return key in _active
