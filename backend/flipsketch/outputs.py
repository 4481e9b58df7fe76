"""Writing an animation to disk: frames, GIF, MP4, contact sheet, run.json.

Everything is written into a temporary sibling folder that is renamed into
place at the end, so a crash, a full disk or a cancel never leaves a
half-written result where a user (or Blender) would pick it up.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flipsketch import SCHEMA_VERSION, __version__
from flipsketch.errors import InputError
from flipsketch.jsonio import write_json
from flipsketch.metrics import ChamferScorer
from flipsketch.models import SketchModel
from flipsketch.pipeline import Animation
from flipsketch.ranking import rank_variants
from flipsketch.tiny_model import TINY_NOTICE
from flipsketch.trace import trace_frames

DEFAULT_FPS = 10  # the released app's GIF rate


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; move it to `target` on success.

    On any exception the temporary folder is removed and `target` is untouched."""
    target = Path(target)
    if target.exists() and not overwrite and any(target.iterdir()):
        raise InputError(
            f"Output folder '{target}' already exists and is not empty.",
            "Choose a new --out folder or pass --overwrite.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; results are meant to be shared
    try:
        yield partial
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(partial, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def write_gif(frames: list[Image.Image], path: Path, fps: int) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)


def write_mp4(frames: list[Image.Image], path: Path, fps: int) -> None:
    """H.264 with the ffmpeg binary that imageio-ffmpeg ships (no system ffmpeg needed)."""
    import imageio_ffmpeg

    width, height = frames[0].size
    even = (width + width % 2, height + height % 2)  # yuv420p needs even sizes
    writer = imageio_ffmpeg.write_frames(
        str(path), even, fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1, quality=8
    )
    writer.send(None)
    for frame in frames:
        canvas = Image.new("RGB", even, "white")
        canvas.paste(frame.convert("RGB"))
        writer.send(np.ascontiguousarray(np.asarray(canvas)))
    writer.close()


def contact_sheet(frames: list[Image.Image], columns: int = 5, gap: int = 4) -> Image.Image:
    columns = min(columns, len(frames))
    rows = -(-len(frames) // columns)
    w, h = frames[0].size
    sheet = Image.new("L", (columns * w + (columns + 1) * gap, rows * h + (rows + 1) * gap), 160)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet.paste(frame.convert("L"), (gap + c * (w + gap), gap + r * (h + gap)))
    return sheet


def write_clip(frames: list[Image.Image], folder: Path, fps: int, first_index: int = 0) -> list[str]:
    """One variant's files (frames, previews, traced strokes); returns their names.
    Frame files are numbered from `first_index` (an extension continues its parent)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, frame in enumerate(frames, start=first_index):
        name = f"frame_{i:04d}.png"
        frame.save(folder / name)
        names.append(name)
    write_gif(frames, folder / "animation.gif", fps)
    write_mp4(frames, folder / "animation.mp4", fps)
    contact_sheet(frames).save(folder / "contact_sheet.png")
    write_json(folder / "strokes.json", trace_frames(frames), indent=None)
    return [*names, "animation.gif", "animation.mp4", "contact_sheet.png", "strokes.json"]


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process (None where the OS lacks getrusage)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def library_versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {
        "flipsketch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def run_record(animation: Animation, model: SketchModel, fps: int, files: dict[str, list[str]]) -> dict[str, Any]:
    """Everything needed to reproduce or audit a result."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": animation.params.to_dict(),
        "seeds": animation.seeds(),
        "fps": fps,
        "model": {
            "name": model.source.name,
            "subfolder": model.source.subfolder,
            "revision": model.source.revision,
            "folder": str(model.folder),
            "tiny_random": model.is_tiny_random,
        },
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "versions": library_versions(),
        "stats": animation.stats,
        # Variants best first by consistency with the sketch; "hidden": below params.min_score.
        "score_method": animation.score_method,
        "variants": [
            {**entry, "folder": variant_folder(animation, entry["seed"])} for entry in animation.ranking or []
        ],
        "peak_cpu_rss_bytes": peak_rss_bytes(),
        "files": files,
    }
    if model.is_tiny_random:
        record["notice"] = TINY_NOTICE
    return record


def variant_folder(animation: Animation, seed: int) -> str:
    """Where a variant's files go inside the result: "." for one, else variant_<seed>."""
    return "." if len(animation.frames) == 1 else f"variant_{seed}"


def write_animation(
    animation: Animation,
    model: SketchModel,
    out: str | Path,
    sketch: Image.Image,
    fps: int = DEFAULT_FPS,
    overwrite: bool = False,
    first_index: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write all outputs of `animation` to `out` atomically; return `out`.

    One variant goes straight into `out`; several go into `variant_<seed>/`.
    Variants not yet ranked are ranked offline (chamfer similarity to `sketch`).
    `extra` is merged into run.json (an extension's parent segment)."""
    out = Path(out)
    if animation.ranking is None:
        rank_variants(animation, sketch, ChamferScorer())
    with atomic_folder(out, overwrite) as folder:
        sketch.save(folder / "sketch.png")
        files: dict[str, list[str]] = {}
        for seed, frames in zip(animation.seeds(), animation.frames, strict=True):
            sub = variant_folder(animation, seed)
            files[sub] = write_clip(frames, folder / sub, fps, first_index)
        record = {**run_record(animation, model, fps, files), **(extra or {})}
        write_json(folder / "run.json", record, default=str)
    return out
