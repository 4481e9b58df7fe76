"""`flipsketch serve`: the HTTP API that Blender, scripts and farms talk to.

One process owns the GPU and keeps the model warm; jobs queue behind one
worker (jobs.py). Everything is under /v1 and needs a bearer token except
/v1/health. Results travel over HTTP, so a remote GPU box works like a local
one. A ready-file (port, token, pid, API version), written atomically once the
socket is bound, tells a parent process where the server is.

Request bodies are decoded and sketches prepared in worker threads (at most
PARSE_SLOTS at once), so a large drawing never stalls the event loop: health
and progress keep answering. Only Host names of this server are served (DNS
rebinding defence); the API docs are off unless asked for, and then need the
token like everything else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from flipsketch import __version__
from flipsketch.errors import InputError, StorageError
from flipsketch.folder_lock import lock_folder
from flipsketch.jobs import FINAL, QUEUED, Job, JobStore, Worker
from flipsketch.jsonio import dumps
from flipsketch.listener import KEEP_ALIVE_S, MAX_CONNECTIONS, TimedH11Protocol, allowed_hosts, bind, host_name
from flipsketch.lora import MAX_LORAS
from flipsketch.models import ModelSource
from flipsketch.params import MAX_FRAMES, QUALITY_PRESETS, QUALITY_TIME_RATIOS, REFERENCES, AnimateParams
from flipsketch.sketch import prepare_image, prepare_reference, rasterize_strokes
from flipsketch.validation import FieldError, Roots, check_tree, model_source, parse_json

API_VERSION = 3  # v2: a drawing's strokes may carry layer masks ("masks", "mask_layers"); v3: colours and fills
MAX_BODY_BYTES = 32 * 2**20  # a 4096² PNG in base64 fits comfortably
BODY_TIMEOUT_S = 120.0  # to receive a whole request body once its head has arrived
# Requests decoded at once (each may hold a large image). Waiting for a slot
# happens on the event loop, so it never takes a thread from other routes.
PARSE_SLOTS = anyio.CapacityLimiter(2)


async def off_loop(function: Any, *args: Any) -> Any:
    """`function(*args)` in a worker thread, at most PARSE_SLOTS at a time."""
    return await anyio.to_thread.run_sync(function, *args, limiter=PARSE_SLOTS)


MAX_FIRST_INDEX = 100_000  # frames already in a clip that a job extends


def _error(status: int, message: str, hint: str = "", field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "hint": hint, "field": field}}, status_code=status)


def _input_error(exc: InputError, field: str | None = None) -> HTTPException:
    """A 422 naming the field: `field` (the request's part) joined with the
    FieldError's own field ("params" + "guidance" -> "params.guidance")."""
    inner = exc.field if isinstance(exc, FieldError) else None
    if inner and field:
        inner = f"{field}{'' if inner.startswith('[') else '.'}{inner}"
    return HTTPException(422, {"message": exc.message, "hint": exc.hint, "field": inner or field})


def _model(body: dict[str, Any], roots: Roots) -> ModelSource | None:
    try:
        return model_source(body, roots)
    except InputError as exc:
        raise _input_error(exc) from None


def parse_job_request(
    body: Any, roots: Roots | None = None
) -> tuple[AnimateParams, Any, ModelSource | None, int, dict | None]:
    """Validate a job submission; every problem names its field. Paths it names
    (model, LoRAs) must lie inside `roots` when it has folders.

    `segment: {"first_index": n}` makes the job an extension: the sketch is the
    previous clip's last frame, used exactly, and frame 0 is dropped at the join."""
    if not isinstance(body, dict):
        raise HTTPException(400, {"message": "The body must be a JSON object.", "hint": "", "field": None})
    segment = body.get("segment")
    if segment is not None and not (
        isinstance(segment, dict)
        and isinstance(segment.get("first_index"), int)
        and not isinstance(segment["first_index"], bool)
        and 0 <= segment["first_index"] <= MAX_FIRST_INDEX
        and set(segment) == {"first_index"}
    ):
        hint = f"Send {{'first_index': <frames already in the clip, up to {MAX_FIRST_INDEX}>}}."
        raise HTTPException(422, {"message": "'segment' is malformed.", "hint": hint, "field": "segment"})
    roots = roots or Roots()
    try:
        params = AnimateParams.from_dict(body.get("params"), roots)
    except InputError as exc:
        raise _input_error(exc, "params") from None
    source = _model(body, roots)
    has_png, has_strokes = "sketch_png" in body, "strokes" in body
    if has_png == has_strokes:
        raise HTTPException(
            422, {"message": "Send exactly one of 'sketch_png' and 'strokes'.", "hint": "", "field": "sketch_png"}
        )
    try:
        if has_png:
            if not isinstance(body["sketch_png"], str):
                raise InputError("'sketch_png' must be a base64 string.", "Encode the PNG bytes with base64.")
            try:
                data = base64.b64decode(body["sketch_png"], validate=True)
            except (binascii.Error, ValueError):
                raise InputError("'sketch_png' is not valid base64.", "Encode the PNG bytes with base64.") from None
            prepare = prepare_reference if segment else prepare_image
            sketch = prepare(data, params.width, params.height)
        else:
            sketch = rasterize_strokes(body["strokes"], params.width, params.height)
    except InputError as exc:
        raise _input_error(exc, "sketch_png" if has_png else "strokes") from None
    fps = body.get("fps", 10)
    if not isinstance(fps, int) or isinstance(fps, bool) or not 1 <= fps <= 60:
        raise HTTPException(422, {"message": f"'fps' is {fps!r}.", "hint": "Use 1 to 60.", "field": "fps"})
    return params, sketch, source, fps, segment


def parse_train_request(body: Any, roots: Roots | None = None) -> tuple[dict[str, Any], ModelSource | None]:
    """Validate a training submission against the server's own files: the data
    folder and the run folder are paths on this machine (inside `roots` when it
    has folders); `out` must be new, empty or a training run."""
    from flipsketch.train_config import TrainConfig, check_out

    if not isinstance(body, dict):
        raise HTTPException(400, {"message": "The body must be a JSON object.", "hint": "", "field": None})

    def bad(field: str, message: str, hint: str) -> HTTPException:
        return HTTPException(422, {"message": message, "hint": hint, "field": field})

    unknown = set(body) - {"data", "out", "config", "resume", "overwrite", "model", "subfolder", "revision"}
    if unknown:
        raise bad(sorted(unknown)[0], f"Unknown field '{sorted(unknown)[0]}'.", "See the training API in the README.")
    roots = roots or Roots()
    try:
        data, out = roots.path("data", body.get("data")), roots.path("out", body.get("out"))
    except InputError as exc:
        raise _input_error(exc) from None
    if not data.is_dir():
        raise bad("data", f"Training data folder '{data}' does not exist on the server.", "Send a folder of clips.")
    flags = {name: body.get(name, False) for name in ("resume", "overwrite")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise bad(name, f"'{name}' must be true or false, not {value!r}.", "")
    try:
        config = TrainConfig.from_dict(body.get("config", {}))
    except InputError as exc:
        raise _input_error(exc, "config") from None
    try:
        check_out(out, **flags)
    except InputError as exc:
        raise _input_error(exc) from None
    source = _model(body, roots)
    request = {"data": str(data), "out": str(out), "config": asdict(config)}
    return {**request, **flags}, source


async def json_body(request: Request) -> Any:
    """The request's JSON, received within BODY_TIMEOUT_S and parsed strictly off
    the event loop: 400 for what is not JSON, 422 naming the field for
    NaN/Infinity, overflowing numbers, invalid UTF-8 and deep nesting."""
    try:
        raw = await asyncio.wait_for(request.body(), BODY_TIMEOUT_S)
    except TimeoutError:
        hint = "Check the connection; the body must arrive within two minutes."
        raise HTTPException(408, {"message": "The request body arrived too slowly.", "hint": hint}) from None
    try:
        return await off_loop(parse_json, raw)
    except FieldError as exc:
        detail = {"message": exc.message, "hint": exc.hint, "field": exc.field}
        raise HTTPException(400 if exc.field is None else 422, detail) from None


def create_app(
    store: JobStore,
    worker: Worker,
    token: str,
    on_startup: Any = None,
    on_shutdown: Any = None,
    hosts: set[str] | None = None,
    docs: bool = False,
    roots: Roots | None = None,
) -> FastAPI:
    """The API. `hosts`: Host header names served (None: any); `docs`: serve
    /v1/docs, /v1/redoc and /v1/openapi.json (behind the token); `roots`
    confines the paths requests may name (`serve --allow-path`)."""
    stopping = threading.Event()
    roots = roots or Roots()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_startup:
            on_startup()
        yield
        # Runs on SIGTERM/SIGINT and parent death alike; uvicorn re-raises the
        # signal afterwards, so nothing after server.run() can be relied on.
        stopping.set()
        if on_shutdown:
            on_shutdown()

    app = FastAPI(
        title="FlipSketch", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        if request.method in ("POST", "PUT"):
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "Content-Length is required.")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return _error(
                    413, f"The request is larger than {MAX_BODY_BYTES // 2**20} MiB.", "Send a smaller sketch."
                )
        return await call_next(request)

    @app.middleware("http")  # added last, so it runs first
    async def check_host(request: Request, call_next: Any) -> Any:
        if hosts is not None and host_name(request.headers.get("host", "")) not in hosts:
            hint = "Connect by this server's own address, or start it with --allow-host NAME."
            return _error(421, "This server does not answer to that host name.", hint, "Host")
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)  # also unknown routes and methods: JSON, never plain text
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail), "hint": "", "field": None}
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"Internal error: {type(exc).__name__}.", "Report this with the server's log.")

    def authorised(request: Request) -> None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HTTPException(
                401, {"message": "Missing or wrong token.", "hint": "Send 'Authorization: Bearer <token>'."}
            )

    def job_or_404(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            if job_id in store.unreadable:
                hint = "Delete the job (DELETE /v1/jobs/<id>) to remove its folder."
                raise HTTPException(404, {"message": f"Job '{job_id}' cannot be read.", "hint": hint, "field": None})
            raise HTTPException(404, {"message": f"No job '{job_id}'.", "hint": "", "field": None})
        return job

    def describe(job: Job) -> dict[str, Any]:
        return {**job.public(), "files": store.result_files(job)}

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        """On the event loop (needs no thread, so it always answers); `ok` is
        false once the worker thread has died: restart the server."""
        alive = worker.is_alive()
        queued = sum(job.state == QUEUED for job in list(store.jobs.values()))
        return {
            "ok": alive,
            "api": API_VERSION,
            "version": __version__,
            "worker": {"alive": alive, "running": worker.current.id if worker.current else None},
            "queue": {"length": queued, "oldest_queued_s": store.oldest_queued_s()},
        }

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorised)])

    @v1.get("/capabilities")
    def capabilities() -> dict[str, Any]:
        import psutil
        import torch

        device = worker.device
        if device.startswith("cuda"):
            free, total = torch.cuda.mem_get_info(torch.device(device))
        else:
            memory = psutil.virtual_memory()
            free, total = memory.available, memory.total
        loaded = worker.model
        return {
            "api": API_VERSION,
            "version": __version__,
            "device": device,
            "free_memory_bytes": free,
            "total_memory_bytes": total,
            "default_model": asdict(worker.default_model),
            "loaded_model": asdict(loaded.source) if loaded else None,
            "tiny_random_model": bool(loaded and loaded.is_tiny_random),
            "defaults": AnimateParams(prompt="").to_dict(),
            # Quality presets (params "quality"): what each sets and its measured time over plain text-to-video.
            "quality_presets": {
                name: {"params": preset, "time_ratio": QUALITY_TIME_RATIOS[name]}
                for name, preset in QUALITY_PRESETS.items()
            },
            "references": list(REFERENCES),
            "limits": {
                "max_frames": MAX_FRAMES,
                "max_body_bytes": MAX_BODY_BYTES,
                "max_variants": 16,
                "max_loras": MAX_LORAS,
            },
            "loaded_loras": [key[0] for key in loaded.loras.loaded] if loaded and loaded.loras else [],
            "queue_length": store.pending.qsize(),
        }

    async def stored(add: Any, *args: Any) -> dict[str, Any]:
        """Queue a job (in a thread: it writes files); a disk that refuses its
        folder is a JSON 507 (full) or 503."""
        try:
            return describe(await run_in_threadpool(add, *args))
        except StorageError as exc:
            status = 507 if exc.disk_full else 503
            raise HTTPException(status, {"message": exc.message, "hint": exc.hint, "field": None}) from None

    @v1.post("/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        return await stored(store.submit, *await off_loop(parse_job_request, await json_body(request), roots))

    @v1.post("/train", status_code=202)
    async def train(request: Request) -> dict[str, Any]:
        request_args = await off_loop(parse_train_request, await json_body(request), roots)
        return await stored(store.submit_training, *request_args)

    @v1.get("/jobs")
    def list_jobs() -> dict[str, Any]:
        """Every job that can be served; records that cannot (unreadable after a
        restart, or not valid JSON) are listed under `skipped` instead."""
        jobs, skipped = [], [{"id": i, "reason": why} for i, why in list(store.unreadable.items())]
        for job in sorted(list(store.jobs.values()), key=lambda j: j.created):
            try:
                described = describe(job)
                check_tree(described)
            except (OSError, InputError) as exc:
                skipped.append({"id": job.id, "reason": str(exc)})
                continue
            jobs.append(described)
        return {"jobs": jobs, "skipped": skipped}

    @v1.get("/jobs/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        return describe(job_or_404(job_id))

    @v1.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        store.cancel(job)
        return describe(job)

    @v1.delete("/jobs/{job_id}")
    def delete(job_id: str) -> dict[str, Any]:
        if not store.forget_unreadable(job_id):
            store.delete(job_or_404(job_id))
        return {"deleted": job_id}

    @v1.get("/jobs/{job_id}/events")
    def events(job_id: str) -> StreamingResponse:
        job = job_or_404(job_id)
        log = store.events[job.id]

        async def stream() -> AsyncIterator[str]:
            sent = 0
            while not stopping.is_set():
                while sent < len(log):
                    event = log[sent]
                    sent += 1
                    yield f"event: {event['type']}\ndata: {dumps(event)}\n\n"
                    if event["type"] == "state" and event["state"] in FINAL:
                        return  # decided by the event itself: no race with the worker
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @v1.get("/jobs/{job_id}/files/{name:path}")
    def file(job_id: str, name: str) -> FileResponse:
        job = job_or_404(job_id)
        result = store.folder(job.id) / "result"
        path = result / name
        # Only listed files: no traversal, nothing unfinished; and no symbolic
        # link anywhere below the result folder (it could point anywhere).
        links = [p for p in (path, *path.parents) if p.is_relative_to(result) and p.is_symlink()]
        if name not in store.result_files(job) or links:
            raise HTTPException(404, {"message": f"Job {job_id} has no file '{name}'.", "hint": "", "field": None})
        return FileResponse(path)

    if docs:

        @v1.get("/openapi.json", include_in_schema=False)
        def openapi() -> dict[str, Any]:
            return app.openapi()

        @v1.get("/docs", include_in_schema=False)
        def swagger() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/v1/openapi.json", title="FlipSketch API")

        @v1.get("/redoc", include_in_schema=False)
        def redoc() -> HTMLResponse:
            return get_redoc_html(openapi_url="/v1/openapi.json", title="FlipSketch API")

    app.include_router(v1)
    return app


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Atomically, readable by the owner only (it holds the token): the temp
    file is always made new, so a stale one's permissions never carry over."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def watch_parent(parent_pid: int, on_death: Any) -> None:
    """Call `on_death` once the parent process is gone (all platforms)."""
    import psutil

    def loop() -> None:
        while psutil.pid_exists(parent_pid):
            threading.Event().wait(0.5)
        on_death()

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def serve(
    host: str,
    port: int,
    jobs_dir: Path,
    model: ModelSource,
    device: str,
    dtype: Any,
    token: str | None = None,
    ready_file: Path | None = None,
    parent_pid: int | None = None,
    allow_hosts: list[str] | None = None,
    docs: bool = False,
    allow_paths: list[str] | None = None,
) -> None:
    """Serve until stopped. Raises FlipSketchError when the port is taken or
    another server holds `jobs_dir` (see folder_lock)."""
    import uvicorn

    sock = bind(host, port)
    try:
        jobs_lock = lock_folder(jobs_dir)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    token = token or secrets.token_urlsafe(32)
    store = JobStore(jobs_dir)
    worker = Worker(store, model, device, dtype)
    info = {"url": f"http://{host}:{port}", "port": port, "token": token, "pid": os.getpid(), "api": API_VERSION}

    def started() -> None:
        if ready_file:
            write_ready_file(ready_file, info)
        print(f"FlipSketch server on {info['url']} (API v{API_VERSION}); jobs in {store.root}", flush=True)

    def stopped() -> None:
        worker.stop()
        if ready_file:
            Path(ready_file).unlink(missing_ok=True)

    app = create_app(
        store, worker, token, started, stopped, allowed_hosts(host, allow_hosts or []), docs, Roots(allow_paths)
    )
    config = uvicorn.Config(
        app,
        http=TimedH11Protocol,
        log_level="warning",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
    )
    server = uvicorn.Server(config)
    if parent_pid:

        def parent_died() -> None:
            server.should_exit = True

        watch_parent(parent_pid, parent_died)
    worker.start()
    with jobs_lock:
        server.run(sockets=[sock])
