"""Jobs on disk and the single GPU worker that runs them.

Each job is a folder `<jobs>/<id>/` holding `job.json` (state, parameters,
progress, error), `sketch.png` (the prepared input) and, once finished,
`result/` (written through `outputs.atomic_folder`, so it appears whole or not
at all). The folder is the source of truth: a restarted server finds finished
jobs, re-queues waiting ones and marks the one it was running as failed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from flipsketch.errors import Cancelled, FlipSketchError
from flipsketch.models import ModelSource, SketchModel, load_model
from flipsketch.params import AnimateParams
from flipsketch.progress import CancelToken, ProgressEvent

log = logging.getLogger("flipsketch.jobs")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = {DONE, FAILED, CANCELLED}
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
OOM_HINT = "Try fewer frames or variants, --no-align, or a lower resolution; or use a GPU with more memory."


def again(job: Job) -> str:
    """What to do about a job the server dropped; a training run keeps its checkpoints."""
    if job.kind == "train":
        return "Submit the training again with resume: it continues from its last checkpoint."
    return "Submit the job again."


@dataclass
class Job:
    id: str
    params: dict[str, Any]
    model: dict[str, Any] | None = None  # {"name", "subfolder", "revision"}; None = the server's model
    fps: int = 10
    segment: dict[str, Any] | None = None  # {"first_index": n}: an extension of a clip
    kind: str = "animate"  # or "train": a LoRA training run (`train` holds its request)
    train: dict[str, Any] | None = None  # {"data", "out", "config", "resume", "overwrite"}
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    """The jobs folder plus, in memory, each job's event log for streaming."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.tokens: dict[str, CancelToken] = {}
        self.pending: queue.Queue[str] = queue.Queue()
        self._recover()

    def _recover(self) -> None:
        """Load jobs left by an earlier server; nothing half-written survives."""
        found = []
        for path in self.root.glob("*/job.json"):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                log.warning("ignoring unreadable job record %s", path)
                continue
            for partial in path.parent.glob(".result.partial-*"):
                shutil.rmtree(partial, ignore_errors=True)
            if job.state == RUNNING:
                job.state, job.finished = FAILED, time.time()
                job.error = {
                    "message": "The server stopped while this job was running.",
                    "hint": again(job),
                }
                self._write(job)
            found.append(job)
        for job in sorted(found, key=lambda j: j.created):
            self.jobs[job.id] = job
            self.events[job.id] = [{"type": "state", "state": job.state}]
            self.tokens[job.id] = CancelToken()
            if job.state == QUEUED:
                self.pending.put(job.id)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def get(self, job_id: str) -> Job | None:
        """The job, or None for unknown or malformed ids (never a path outside root)."""
        return self.jobs.get(job_id) if _JOB_ID.match(job_id) else None

    def _write(self, job: Job) -> None:
        path = self.folder(job.id) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job.public(), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    def _emit(self, job: Job, event: dict[str, Any]) -> None:
        self.events[job.id].append(event)

    def submit(
        self,
        params: AnimateParams,
        sketch: Image.Image,
        model: ModelSource | None,
        fps: int,
        segment: dict[str, Any] | None = None,
    ) -> Job:
        job = Job(
            id=uuid.uuid4().hex,
            params={k: v for k, v in params.to_dict().items() if k != "lambda"},
            model=asdict(model) if model else None,
            fps=fps,
            segment=segment,
        )
        return self._add(job, sketch)

    def submit_training(self, request: dict[str, Any], model: ModelSource | None) -> Job:
        """Queue a LoRA training run on the warm model (checked by the server)."""
        return self._add(
            Job(id=uuid.uuid4().hex, params={}, model=asdict(model) if model else None, kind="train", train=request)
        )

    def _add(self, job: Job, sketch: Image.Image | None = None) -> Job:
        folder = self.folder(job.id)
        folder.mkdir()
        if sketch is not None:
            sketch.save(folder / "sketch.png")
        with self.lock:
            self._write(job)
            self.jobs[job.id] = job
            self.events[job.id] = [{"type": "state", "state": QUEUED}]
            self.tokens[job.id] = CancelToken()
        self.pending.put(job.id)
        return job

    def set_state(self, job: Job, state: str, error: FlipSketchError | None = None) -> None:
        with self.lock:
            job.state = state
            if state == RUNNING:
                job.started = time.time()
            if state in FINAL:
                job.finished = time.time()
            if error is not None:
                job.error = {"message": error.message, "hint": error.hint}
            self._write(job)
            event: dict[str, Any] = {"type": "state", "state": state}
            if job.error:
                event["error"] = job.error
            self._emit(job, event)

    def progress(self, job: Job, event: ProgressEvent) -> None:
        with self.lock:
            job.progress = asdict(event)
            self._emit(job, {"type": "progress", **job.progress})

    def cancel(self, job: Job) -> None:
        self.tokens[job.id].cancel()
        if job.state == QUEUED:
            self.set_state(job, CANCELLED)

    def delete(self, job: Job) -> None:
        self.cancel(job)
        with self.lock:
            self.jobs.pop(job.id, None)
        if job.state != RUNNING:
            shutil.rmtree(self.folder(job.id), ignore_errors=True)

    def result_files(self, job: Job) -> list[str]:
        result = self.folder(job.id) / "result"
        if job.state != DONE or not result.is_dir():
            return []
        return sorted(p.relative_to(result).as_posix() for p in result.rglob("*") if p.is_file() and not p.is_symlink())


class Worker(threading.Thread):
    """Runs queued jobs one at a time on one device, keeping the model warm."""

    def __init__(self, store: JobStore, default_model: ModelSource, device: str, dtype: Any) -> None:
        super().__init__(name="flipsketch-worker", daemon=True)
        self.store = store
        self.default_model = default_model
        self.device = device
        self.dtype = dtype
        self.model: SketchModel | None = None
        self.scorer: Any = None  # ranks variants; loaded with the first animation job
        self.current: Job | None = None
        self.stopping = threading.Event()

    def model_for(self, job: Job) -> SketchModel:
        source = ModelSource(**job.model) if job.model else self.default_model
        if self.model is None or self.model.source != source:
            self.model = None  # free the old weights before loading new ones
            self.model = load_model(source, dtype=self.dtype, device=self.device)
        return self.model

    def run(self) -> None:
        try:  # warm up: the first job should not pay for loading the model
            self.model = load_model(self.default_model, dtype=self.dtype, device=self.device)
        except FlipSketchError as exc:  # jobs will report it; the server stays up
            log.warning("default model not loaded: %s", exc)
        while not self.stopping.is_set():
            try:
                job_id = self.store.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            job = self.store.jobs.get(job_id)
            if job is None or job.state != QUEUED:
                continue
            self.current = job
            try:
                self.run_job(job)
            finally:
                self.current = None
                if job.id not in self.store.jobs:  # deleted while it ran
                    shutil.rmtree(self.store.folder(job.id), ignore_errors=True)

    def run_job(self, job: Job) -> None:
        import torch

        store = self.store
        store.set_state(job, RUNNING)
        try:
            model = self.model_for(job)
            if job.kind == "train":
                self.train(job, model)
            else:
                self.animate(job, model)
        except Cancelled:
            if self.stopping.is_set():
                stopped = FlipSketchError("The server stopped during this job.", again(job))
                store.set_state(job, FAILED, stopped)
            else:
                store.set_state(job, CANCELLED)
        except FlipSketchError as exc:
            store.set_state(job, FAILED, exc)
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            store.set_state(job, FAILED, FlipSketchError("The GPU ran out of memory.", OOM_HINT))
        except Exception as exc:  # a bug must fail the job, never the server
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            store.set_state(
                job, FAILED, FlipSketchError(f"Internal error: {type(exc).__name__}: {exc}", "Report this.")
            )
        else:
            store.set_state(job, DONE)

    def animate(self, job: Job, model: SketchModel) -> None:
        from flipsketch.outputs import write_animation
        from flipsketch.pipeline import animate
        from flipsketch.ranking import rank_variants, variant_scorer

        store, folder = self.store, self.store.folder(job.id)
        sketch = Image.open(folder / "sketch.png").convert("L")
        params = AnimateParams(**job.params)
        animation = animate(
            model, sketch, params, progress=lambda e: store.progress(job, e), cancel=store.tokens[job.id]
        )
        if self.scorer is None:  # CLIP from $FLIPSKETCH_CLIP_MODEL, else the offline chamfer score
            self.scorer = variant_scorer(device=self.device)
        rank_variants(animation, sketch, self.scorer)  # run.json lists the variants best first
        first = 0
        if job.segment:
            animation, first = animation.as_segment(), job.segment["first_index"]
        extra = {"segment": job.segment} if job.segment else None
        write_animation(animation, model, folder / "result", sketch, job.fps, False, first, extra)

    def train(self, job: Job, model: SketchModel) -> None:
        """A LoRA training run on the warm model. Cancelling stops after the
        current step; the checkpoints stay, so `resume` continues the run.
        The result (for remote clients) is the adapter, run.json and the
        validation previews; the LoRA itself is in the run's folder."""
        from flipsketch.outputs import atomic_folder
        from flipsketch.train import train_lora
        from flipsketch.train_config import TrainConfig

        store, request, token = self.store, job.train, self.store.tokens[job.id]
        assert request is not None  # a "train" job is created with its request
        config = TrainConfig(**request["config"])
        started, first_step = time.perf_counter(), None

        def on_step(step: int, loss: float) -> None:
            nonlocal first_step
            if token.is_set():
                raise Cancelled("The training run was cancelled; its checkpoints are kept.")
            first_step = first_step or step
            done = step - first_step + 1
            eta = (time.perf_counter() - started) / done * (config.steps - step)
            fraction = min(step / config.steps, 0.99)
            store.progress(job, ProgressEvent("train", step, config.steps, fraction, eta, loss))

        result = train_lora(
            request["data"],
            request["out"],
            model,
            config,
            resume=request.get("resume", False),
            overwrite=request.get("overwrite", False),
            on_step=on_step,
        )
        with atomic_folder(store.folder(job.id) / "result") as partial:
            for name in ("run.json", "adapter_config.json", "adapter_model.safetensors"):
                shutil.copy2(result.out / name, partial / name)
            for name in ("animation.gif", "contact_sheet.png"):
                if (result.out / "validation" / name).is_file():
                    shutil.copy2(result.out / "validation" / name, partial / f"validation_{name}")

    def stop(self) -> None:
        """Stop taking jobs and cancel the running one, which is recorded as failed
        (a job of a process killed outright is marked failed on the next start)."""
        self.stopping.set()
        if self.current is not None:
            self.store.tokens[self.current.id].cancel()
        self.join(timeout=30)
