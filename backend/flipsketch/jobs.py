"""Jobs on disk and the single GPU worker that runs them.

Each job is a folder `<jobs>/<id>/` holding `job.json` (state, parameters,
progress, error), `sketch.png` (the prepared input) and, once finished,
`result/` (written through `outputs.atomic_folder`, so it appears whole or not
at all). The folder is the source of truth: a restarted server finds finished
jobs, re-queues waiting ones, marks the one it was running as failed, removes
folders of submissions that never completed and reports (without serving)
records it cannot read.

The worker survives anything a job raises, including failures to record the
job's state (a full disk, no file descriptors left): the state changes in
memory, its event is always sent, and the record is written again once the
disk takes it.
"""

from __future__ import annotations

import logging
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

from flipsketch.errors import Cancelled, FlipSketchError, storage_error
from flipsketch.jsonio import write_json
from flipsketch.models import ModelSource, SketchModel, load_model
from flipsketch.params import AnimateParams
from flipsketch.progress import CancelToken, ProgressEvent
from flipsketch.validation import FieldError, parse_json

log = logging.getLogger("flipsketch.jobs")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = {DONE, FAILED, CANCELLED}
STATES = {QUEUED, RUNNING} | FINAL
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


def read_record(folder: Path) -> Job:
    """The job recorded in `folder`/job.json, read strictly (valid UTF-8, finite
    numbers, known state and kind, its own id); ValueError or TypeError otherwise."""
    try:
        data = parse_json((folder / "job.json").read_bytes())
    except FieldError as exc:
        raise ValueError(exc.message) from None
    if not isinstance(data, dict):
        raise ValueError("the record is not a JSON object")
    job = Job(**data)
    if job.id != folder.name or job.state not in STATES or job.kind not in ("animate", "train"):
        raise ValueError(f"id {job.id!r}, state {job.state!r} or kind {job.kind!r} is not a job's")
    if not isinstance(job.params, dict) or (job.kind == "train" and not isinstance(job.train, dict)):
        raise ValueError("the record's parameters are malformed")
    return job


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
        self.unreadable: dict[str, str] = {}  # job id -> why its record cannot be served
        self.unsaved: set[str] = set()  # jobs whose latest state is not on disk yet
        self._recover()

    def _recover(self) -> None:
        """Load jobs left by an earlier server; nothing half-written survives."""
        found = []
        for folder in self.root.iterdir():
            if not (_JOB_ID.match(folder.name) and folder.is_dir()):
                continue
            for partial in [*folder.glob(".result.partial-*"), *folder.glob(".job.json.tmp-*")]:
                shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
            if not (folder / "job.json").exists():  # a submission that never completed (disk full, crash)
                log.warning("removing half-made job folder %s", folder)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                job = read_record(folder)
            except (OSError, ValueError, TypeError) as exc:  # reported by the job list, never served
                log.warning("ignoring unreadable job record %s: %s", folder / "job.json", exc)
                self.unreadable[folder.name] = f"job.json cannot be read: {exc}"
                continue
            if job.state == RUNNING:
                job.state, job.finished = FAILED, time.time()
                job.error = {
                    "message": "The server stopped while this job was running.",
                    "hint": again(job),
                }
                self._save(job)
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
        write_json(self.folder(job.id) / "job.json", job.public())
        self.unsaved.discard(job.id)

    def _save(self, job: Job) -> None:
        """Write the record, or keep it for `flush` when the disk refuses it."""
        try:
            self._write(job)
        except OSError as exc:
            log.error("job %s: state not recorded (%s); will retry", job.id, exc)
            self.unsaved.add(job.id)

    def flush(self) -> None:
        """Write the records the disk refused earlier (the worker calls this when idle)."""
        with self.lock:
            for job_id in list(self.unsaved):
                job = self.jobs.get(job_id)
                if job is None:
                    self.unsaved.discard(job_id)
                else:
                    self._save(job)

    def oldest_queued_s(self) -> float | None:
        """Seconds the longest-waiting queued job has waited (None: none waits)."""
        created = [job.created for job in list(self.jobs.values()) if job.state == QUEUED]
        return time.time() - min(created) if created else None

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
        """Write the job's folder whole or not at all: StorageError (nothing left
        behind) when the disk refuses it."""
        folder = self.folder(job.id)
        try:
            folder.mkdir()
            if sketch is not None:
                sketch.save(folder / "sketch.png")
            self._write(job)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise storage_error(exc, self.root) from None
        with self.lock:
            self.jobs[job.id] = job
            self.events[job.id] = [{"type": "state", "state": QUEUED}]
            self.tokens[job.id] = CancelToken()
        self.pending.put(job.id)
        return job

    def set_state(self, job: Job, state: str, error: FlipSketchError | None = None) -> None:
        """Change the state and send its event whatever happens; StorageError when
        the record cannot be written, except for final states, whose record is
        written again later (`flush`), so the job's end is never lost."""
        with self.lock:
            job.state = state
            if state == RUNNING:
                job.started = time.time()
            if state in FINAL:
                job.finished = time.time()
            if error is not None:
                job.error = {"message": error.message, "hint": error.hint}
            event: dict[str, Any] = {"type": "state", "state": state}
            if job.error:
                event["error"] = job.error
            self._emit(job, event)
            if state in FINAL:
                self._save(job)
                return
            try:
                self._write(job)
            except OSError as exc:
                self.unsaved.add(job.id)
                raise storage_error(exc, self.folder(job.id)) from None

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

    def forget_unreadable(self, job_id: str) -> bool:
        """Delete the folder of a record that could not be read; False if there is none."""
        with self.lock:
            if self.unreadable.pop(job_id, None) is None:
                return False
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return True

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
        except Exception as exc:  # jobs will report it; the server stays up
            log.warning("default model not loaded: %s", exc)
        while not self.stopping.is_set():
            try:
                self.next_job()
            except Exception:  # never let one job, or one failed write, stop the queue
                log.error("worker error (the worker goes on):\n%s", traceback.format_exc())

    def next_job(self) -> None:
        if self.store.unsaved:
            self.store.flush()
        try:
            job_id = self.store.pending.get(timeout=0.2)
        except queue.Empty:
            return
        job = self.store.jobs.get(job_id)
        if job is None or job.state != QUEUED:
            return
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
        try:
            store.set_state(job, RUNNING)
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
        except OSError as exc:  # a full disk, no file descriptors left: the next jobs may run again
            store.set_state(job, FAILED, storage_error(exc, store.folder(job.id)))
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
