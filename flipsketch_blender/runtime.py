"""The job runtime: jobs start here, and their results come back here.

An operator describes a job as plain values (`JobSpec`) and hands it to
`queue_job`, which adds the job's row to the scene's list and starts its
thread (backend.py). The threads' messages are applied on the main thread by
`pump()` (a bpy.app.timers callback): state and progress go to the row, and a
finished job goes to the completion handler of its kind (`COMPLETIONS`),
which brings the result into the scene as one undo step.

Rows of `scene.flipsketch.jobs` live in one array that Blender reallocates
when a row is added or removed, so nothing here keeps a row (or any item of a
collection) across such a call: values are copied first, and rows are looked
up again by key (`find_job`).
"""

import json
import os
import queue
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from . import backend, importer
from .export import Placement
from .job_states import ACTIVE_STATES, ENDED_STATES, JobKind, JobState
from .preferences import addon_preferences
from .properties import FLIPSKETCH_PG_job, scene_settings

# Progress weights: the backend's own work (its stages, weighted by cost), the
# download, then the import; the row shows 100 % only once the result is in the scene.
SERVER_SHARE = 0.9
DOWNLOAD_SHARE = 0.05

PUMP_INTERVAL_S = 0.2
pump_stats = {"longest_ms": 0.0}


@dataclass
class JobSpec:
    """Everything a new job row starts with, as plain values (no bpy data).

    `sketch` is {"strokes": flipsketch.strokes drawing} or {"sketch_png": PNG
    bytes}; `frame` is the scene frame of the first drawing; `timing` holds each
    drawing 1-3 frames. For an extension or a regeneration `layer` names the
    layer the result goes on, `sequence_object` the image empty it continues,
    `sequence_first` the number of its first file there, and `append_to` =
    (sequence folder, next file number) tells the thread where to put files."""

    kind: JobKind
    object_name: str
    frame: int
    timing: int
    params: dict
    sketch: dict
    placement: Placement
    camera_name: str = ""
    shot_name: str = ""
    parent_key: str = ""
    regenerates: str = ""
    layer: str = ""
    sequence_object: str = ""
    sequence_first: int = 1
    segment: dict | None = None
    append_to: tuple[str, int] | None = None


def backend_settings(context) -> backend.Settings:
    """What a job thread needs from the preferences, read on the main thread."""
    prefs = addon_preferences(context)
    state_dir = Path(prefs.backend_dir())
    return backend.Settings(
        mode=prefs.backend_mode,
        url=prefs.remote_url,
        token=prefs.remote_token,
        python=prefs.backend_python
        or str(state_dir / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")),
        state_dir=str(state_dir / "server"),
        model=prefs.model,
        subfolder=prefs.model_subfolder,
        device=prefs.device,
        online=bpy.app.online_access,
    )


def output_root(context) -> tuple[Path, str]:
    """The output folder, and a warning when it had to fall back to a temp folder."""
    configured = addon_preferences(context).output_dir or "//flipsketch/"
    if configured.startswith("//") and not bpy.data.filepath:
        fallback = Path(tempfile.gettempdir()) / "flipsketch"
        return fallback, f"The .blend is not saved: results go to {fallback}. Save the file to keep them beside it."
    return Path(bpy.path.abspath(configured)), ""


def find_job(key: str) -> "FLIPSKETCH_PG_job | None":
    """The job row with this key in any scene, or None. Look it up again after
    anything that adds or removes rows: a kept row may point at freed memory."""
    if not key:
        return None
    for scene in bpy.data.scenes:
        for job in scene_settings(scene).jobs:
            if job.key == key:
                return job
    return None


def job_of_layer(context):
    """The imported job whose result is the active layer of the active object (the first one: the clip's root)."""
    ob = context.active_object
    if ob is None or ob.type != "GREASEPENCIL" or ob.data.layers.active is None:
        return None
    name = ob.data.layers.active.name
    return next(
        (
            job
            for job in context.scene.flipsketch.jobs
            if job.state == JobState.IMPORTED and job.object_name == ob.name and name in job.layer_names()
        ),
        None,
    )


def job_of_sequence(context):
    """The imported job whose image sequence is the active object."""
    ob = context.active_object
    if ob is None or ob.type != "EMPTY" or ob.empty_display_type != "IMAGE":
        return None
    return next(
        (j for j in context.scene.flipsketch.jobs if j.state == JobState.IMPORTED and j.sequence_object == ob.name),
        None,
    )


def _new_row(context, kind: JobKind, prompt: str, out_dir: str) -> tuple[str, "FLIPSKETCH_PG_job"]:
    """Add a job row; its key and the row (valid until the next add or remove)."""
    jobs = context.scene.flipsketch.jobs
    job = jobs.add()
    job.key, job.kind, job.prompt, job.out_dir = uuid.uuid4().hex[:12], kind, prompt, out_dir
    context.scene.flipsketch.job_index = len(jobs) - 1
    return job.key, job


def queue_job(op, context, spec: JobSpec) -> str | None:
    """Check the output folder, add the job's row and start its thread; the
    job's key, or None (with a report on `op`) when it cannot run."""
    root, warning = output_root(context)
    probe = root / f".write-test-{uuid.uuid4().hex[:12]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        op.report({"ERROR"}, f"Cannot write to the output folder {root}: {exc.strerror}. Change it in the preferences.")
        return None
    if warning:
        op.report({"WARNING"}, warning)
    key, job = _new_row(context, spec.kind, spec.params["prompt"], "")
    out_dir = root / f"{bpy.path.clean_name(spec.object_name)}_f{spec.frame:04d}_{key}"
    job.out_dir, job.object_name, job.camera_name, job.shot_name = (
        importer.blend_relative(str(out_dir)),  # the .blend and its results can move together
        spec.object_name,
        spec.camera_name,
        spec.shot_name,
    )
    job.frame, job.timing, job.seed = spec.frame, spec.timing, spec.params["seed"]
    job.variant_count = spec.params.get("variants", 1)
    job.placement = json.dumps(spec.placement.to_json())
    job.parent_key, job.regenerates, job.target_layer = spec.parent_key, spec.regenerates, spec.layer
    job.sequence_object, job.sequence_first = spec.sequence_object, spec.sequence_first
    prefs = addon_preferences(context)
    request = {"params": spec.params, **spec.sketch}
    if prefs.model:
        request.update(model=prefs.model, subfolder=prefs.model_subfolder or None)
    if spec.segment:
        request["segment"] = spec.segment
    backend.start_job(key, backend_settings(context), request, out_dir, spec.timing, spec.append_to)
    ensure_pump()
    return key


def queue_training(context, name: str, data: str, out: str, config: dict, resume: bool, overwrite: bool) -> str:
    """Add a training job's row and start its thread; the job's key. `data` and
    `out` are folders as the server sees them."""
    key, _ = _new_row(context, JobKind.TRAIN, f"Train LoRA {name}", out)
    backend.start_training(key, backend_settings(context), data, out, config, resume, overwrite)
    ensure_pump()
    return key


class CompletionError(Exception):
    """A finished job whose result cannot go where it belongs; the message says why."""


def _target_object(job):
    ob = bpy.data.objects.get(job.object_name)
    if ob is None or ob.type != "GREASEPENCIL":
        raise CompletionError(f"The object '{job.object_name}' no longer exists")
    return ob


def _target_layer(job, ob):
    layer = ob.data.layers.get(job.target_layer)
    if layer is None:
        raise CompletionError(f"The layer '{job.target_layer}' of '{ob.name}' no longer exists")
    return layer


def _imported_variants(prepared: dict) -> list[dict]:
    """The variants to bring in, best first: those the backend did not mark
    hidden (scored below the job's min_score). CompletionError when none is left."""
    variants = prepared["variants"]
    shown = [variant for variant in variants if not variant["hidden"]]
    if not shown:
        best, minimum = variants[0], prepared["record"]["params"].get("min_score")
        raise CompletionError(
            f"every variant scored below the minimum score {minimum:.3g} (best: {best['score']:.3g}, seed "
            f"{best['seed']}), so none was imported; lower Min score or turn Hide failures off"
        )
    return shown


def _record_variants(job, variants: list[dict], layers: list[str]) -> None:
    """Every variant on the row, best first; the first len(layers) were
    imported on those layers, the others (hidden by the minimum score, or a
    storyboard shot's runners-up) are files only and have no layer."""
    job.variants.clear()
    for index, variant in enumerate(variants):
        row = job.variants.add()
        row.layer = layers[index] if index < len(layers) else ""
        row.seed, row.score, row.folder = variant["seed"], variant["score"], variant["folder"]
    left_out = len(variants) - len(layers)
    if left_out and variants[len(layers)]["hidden"]:
        job.message = f"{left_out} variant(s) below the minimum score not imported; their files are in the folder."
    elif left_out:
        job.message = f"The best of {len(variants)} variants imported; the others' files are in the folder."


def job_folder(job) -> Path:
    """The job's output folder (stored relative to the .blend where it can be)."""
    return Path(bpy.path.abspath(job.out_dir))


def best_sequence_folder(job) -> Path:
    """The held image sequence of the job's best imported variant."""
    return job_folder(job) / (job.variants[0].folder if job.variants else ".") / "sequence"


@persistent
def keep_job_folders(new_path: str, _data=None) -> None:
    """Save As (a save_pre handler; bpy.data.filepath is still the old path):
    Blender remaps the images' '//' paths to the new folder, but not the job
    rows'; remap theirs the same way, so the job folders stay found."""
    for scene in bpy.data.scenes:
        for job in scene_settings(scene).jobs:
            if job.out_dir.startswith("//") and bpy.data.filepath:
                job.out_dir = importer.blend_relative(bpy.path.abspath(job.out_dir), new_path)


def layer_in_use(object_name: str, layer: str) -> str | None:
    """The key of an active job that will write into `layer` of the object
    (an extension or a regenerated segment), or None."""
    for scene in bpy.data.scenes:
        for job in scene_settings(scene).jobs:
            if job.active and job.object_name == object_name and job.target_layer == layer:
                return job.key
    return None


def orphaned_rows(message: str) -> None:
    """Rows that say a job is active but whose thread is gone (the file was
    reopened, or an undo brought back a row as it was mid-job) fail with
    `message`: they would wait forever."""
    for scene in bpy.data.scenes:
        for job in scene_settings(scene).jobs:
            if job.state in ACTIVE_STATES and not backend.is_running(job.key):
                job.state, job.stage, job.message = (
                    JobState.FAILED,
                    "",
                    f"{message} Its files are in {job_folder(job)}.",
                )


def _finish_animate(job, data: dict) -> None:
    prepared = data["prepared"]
    ob = _target_object(job)
    shown = _imported_variants(prepared)
    if job.shot_name:  # a storyboard shot keeps its best variant
        shown = shown[:1]
    layers = importer.import_results(job, ob, {**prepared, "variants": shown})
    _record_variants(job, prepared["variants"], layers)


def _finish_extend(job, data: dict) -> None:
    prepared = data["prepared"]
    ob = _target_object(job)
    _target_layer(job, ob)
    shown = _imported_variants(prepared)
    layers = importer.import_extension(job, ob, {**prepared, "variants": shown})
    _record_variants(job, prepared["variants"], layers)


def _finish_regenerate(job, data: dict) -> None:
    prepared = data["prepared"]
    ob = _target_object(job)
    _target_layer(job, ob)
    old = find_job(job.regenerates)
    if old is None:
        raise CompletionError(f"The segment's job {job.regenerates} was removed from the list")
    shown = _imported_variants(prepared)
    layers = importer.replace_segment(job, old, ob, {**prepared, "variants": shown})
    _record_variants(job, prepared["variants"], layers)


def _finish_train(job, data: dict) -> None:
    """A training run is done: its LoRA joins the list new jobs use."""
    folder = data["lora"]
    added = addon_preferences(bpy.context).add_lora(folder)
    job.message = f"LoRA added to the list: {folder}" if added else f"LoRA trained, in the list already: {folder}"


COMPLETIONS: dict[JobKind, Callable[[object, dict], None]] = {
    JobKind.ANIMATE: _finish_animate,
    JobKind.EXTEND: _finish_extend,
    JobKind.REGENERATE: _finish_regenerate,
    JobKind.TRAIN: _finish_train,
}

# Called with the row of every job that ends (imported, done, failed or
# cancelled); the storyboard follows its shots this way.
on_job_end: list[Callable[[object], None]] = []


def _complete(job, data: dict) -> None:
    """Run the job's completion handler; a result that cannot be brought in
    fails the job with the reason (its files stay) and never breaks Blender."""
    kind = JobKind(job.kind)
    job.stage, job.progress = "import", SERVER_SHARE + DOWNLOAD_SHARE
    try:
        COMPLETIONS[kind](job, data)
    except Exception as exc:
        what = "Adding the LoRA to the list" if kind == JobKind.TRAIN else "Import"
        job.state, job.message = JobState.FAILED, f"{what} failed: {exc}. Results are in {job_folder(job)}."
        return
    job.state = JobState.DONE if kind == JobKind.TRAIN else JobState.IMPORTED
    job.stage, job.progress = "", 1.0


def _apply(job, kind: str, data: dict) -> None:
    """One thread message, applied to the job's row."""
    if kind == "state":
        job.state = data["state"]
        job.message = data.get("message", "")
        job.backend_id = data.get("backend_id", job.backend_id)
        if job.state == JobState.DOWNLOADING:
            job.stage, job.progress = "download", SERVER_SHARE
    elif kind == "progress":
        job.stage, job.progress = data["stage"], SERVER_SHARE * data["fraction"]
        job.eta = data.get("eta") or -1
        if data.get("loss") is not None:  # a training step
            job.message = f"Step {data['step']}/{data['total']}, loss {data['loss']:.4g}"
    elif kind == "note":
        job.message = data["message"]
    elif kind == "done":
        _complete(job, data)


def pump() -> float:
    """Apply the job threads' messages to bpy data (main thread only)."""
    started = time.perf_counter()
    changed = False
    while True:
        try:
            key, kind, data = backend.messages.get_nowait()
        except queue.Empty:
            break
        if kind == "diagnostics":
            text = bpy.data.texts.get("FlipSketch diagnostics") or bpy.data.texts.new("FlipSketch diagnostics")
            text.from_string(data["text"])
            continue
        job = find_job(key)
        if job is None:
            continue
        changed = True
        _apply(job, kind, data)
        if job.state in ENDED_STATES:
            for listener in on_job_end:
                listener(job)
            if job.state == JobState.IMPORTED:  # each import is one undo step, rows included
                bpy.ops.ed.undo_push(message=f"FlipSketch: {job.prompt[:40]}")
    if changed and bpy.context.window_manager:
        for window in bpy.context.window_manager.windows:
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    area.tag_redraw()
    pump_stats["longest_ms"] = max(pump_stats["longest_ms"], (time.perf_counter() - started) * 1000)
    return PUMP_INTERVAL_S


def ensure_pump() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL_S, persistent=True)


def register() -> None:
    bpy.app.handlers.save_pre.append(keep_job_folders)


def unregister() -> None:
    bpy.app.handlers.save_pre.remove(keep_job_folders)


def shutdown() -> None:
    """Stop following jobs and stop the managed server (the add-on is disabled)."""
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    backend.stop_managed_server()
