"""Training clips: a folder of animations with captions -> sketch-style frames.

A DATA folder holds one entry per clip:

* a folder of frames: PNG/JPEG images, or flipsketch.strokes JSON files (what
  Blender's "Export Animation for Training" writes), in name order;
* a GIF, MP4, MOV, WEBM or MKV file.

A clip is learnt as its sequence of drawings: a frame that repeats the one
before it (a hold, as in animation on twos or a Blender export of every scene
frame) is dropped, because the model makes one new drawing per frame and
Blender holds them at the chosen timing (`keep_holds` turns this off).

Each clip has a caption: `caption.txt` inside a frame folder, or a text file
with the clip's name beside it (`walk.gif` + `walk.txt`, `walk/` + `walk.txt`).
Frames are prepared exactly like the sketches a job animates: image frames go
through the same gray-on-white normalisation and fitting into the square
frame, stroke frames through the same rasteriser. So a LoRA learns from what
it will be shown later. Every problem in the folder is reported at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from flipsketch.errors import InputError
from flipsketch.sketch import fit_to_frame, load_image, normalise_drawing, rasterize_strokes, to_gray_on_white
from flipsketch.validation import parse_json

IMAGE_FRAMES = {".png", ".jpg", ".jpeg"}
VIDEOS = {".mp4", ".mov", ".webm", ".mkv"}
CAPTION = "caption.txt"
MAX_REPORTED = 10
HOLD_TOLERANCE = 1.0  # mean gray-level change below which a frame repeats the previous drawing (video noise)


@dataclass
class Clip:
    """One training animation, ready for the VAE."""

    name: str
    caption: str
    frames: np.ndarray  # (F, H, W) uint8, black lines on white, at the training resolution
    holds: int = 0  # repeated frames dropped


class ClipError(Exception):
    """One clip's problem; collected into a single InputError for the folder."""


def _captions(name: str, clip: Path, data: Path) -> list[Path]:
    """Where a clip's caption may be: in its folder, or <clip>.txt beside it."""
    return ([clip / CAPTION] if clip.is_dir() else []) + [data / f"{name}.txt"]


def _caption(name: str, clip: Path, data: Path) -> str:
    candidates = _captions(name, clip, data)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ClipError(f"'{name}' has no caption (looked for {' and '.join(map(str, candidates))})")
    try:
        text = " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as exc:
        raise ClipError(f"caption '{path}' cannot be read ({exc})") from None
    if not text:
        raise ClipError(f"caption '{path}' is empty")
    return text


def _prepare(gray: Image.Image, resolution: int) -> np.ndarray:
    drawing = normalise_drawing(gray, detect_inverted=True, allow_blank=True)
    return np.asarray(fit_to_frame(drawing, resolution, resolution))


def _frame_order(path: Path) -> list[int | str]:
    """Natural order: frame2 before frame10, as animation tools number frames."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _folder_frames(folder: Path, resolution: int) -> list[np.ndarray]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_FRAMES | {".json"}), key=_frame_order)
    images = [p for p in files if p.suffix.lower() in IMAGE_FRAMES]
    strokes = [p for p in files if p.suffix.lower() == ".json"]
    if images and strokes:
        raise ClipError(f"'{folder.name}' mixes image frames and stroke JSON frames; keep one kind per clip")
    if strokes:
        frames = []
        for path in strokes:
            try:
                data = parse_json(path.read_bytes(), f"Stroke frame '{path}'")
                frames.append(np.asarray(rasterize_strokes(data, resolution, resolution)))
            except OSError as exc:
                raise ClipError(f"stroke frame '{path}' cannot be read ({exc})") from None
            except InputError as exc:
                if "blank" not in exc.message:
                    raise ClipError(f"stroke frame '{path}': {exc.message}") from None
                frames.append(np.full((resolution, resolution), 255, np.uint8))
        return frames
    loaded = []
    for path in images:
        try:
            loaded.append(load_image(path))
        except InputError as exc:
            raise ClipError(exc.message) from None
    sizes = sorted({image.size for image in loaded})
    if len(sizes) > 1:
        raise ClipError(
            f"'{folder.name}' has frames of different sizes ({' and '.join(f'{w}×{h}' for w, h in sizes[:2])}); "
            "export all frames of a clip at one size"
        )
    return [_prepare(image, resolution) for image in loaded]


def _gif_frames(path: Path, resolution: int) -> list[np.ndarray]:
    try:
        with Image.open(path) as image:
            frames = [to_gray_on_white(frame.convert("RGBA")) for frame in ImageSequence.all_frames(image)]
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ClipError(f"'{path}' is not a readable GIF ({exc})") from None
    return [_prepare(frame, resolution) for frame in frames]


def _video_frames(path: Path, resolution: int) -> list[np.ndarray]:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bits_per_pixel=8)
        width, height = next(reader)["size"]
        raw = [np.frombuffer(buf, np.uint8).reshape(height, width) for buf in reader]
    except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClipError(f"video '{path}' cannot be read ({first_line[:200]})") from None
    return [_prepare(Image.fromarray(frame, "L"), resolution) for frame in raw]


def drop_holds(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The frames without those that repeat the drawing before them."""
    kept = frames[:1]
    for frame in frames[1:]:
        if np.abs(frame.astype(np.int16) - kept[-1]).mean() >= HOLD_TOLERANCE:
            kept.append(frame)
    return kept


def _entries(data: Path) -> list[tuple[str, Path]]:
    """(clip name, path) for every clip-like entry; hidden files are skipped."""
    found = []
    for path in sorted(data.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or path.suffix.lower() in VIDEOS | {".gif"}:
            found.append((path.stem if path.is_file() else path.name, path))
    return found


def load_clips(data: str | Path, resolution: int, min_frames: int, keep_holds: bool = False) -> list[Clip]:
    """Every clip in `data`, prepared; or one InputError listing all problems."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"Training data folder '{data}' does not exist.", "Pass the folder that holds your clips.")
    entries = _entries(data)
    if not entries:
        raise InputError(
            f"'{data}' holds no clips.",
            "Add one folder of PNG frames (or a GIF/MP4) per animation, each with a caption .txt.",
        )
    if not any(p.is_file() for name, path in entries for p in _captions(name, path, data)):
        raise InputError(  # maybe not a training set at all: its entries are not listed
            f"'{data}' has no caption for any of its {len(entries)} entries, so it holds no clips.",
            "Give each clip a caption: caption.txt in the clip's folder, or <clip>.txt beside it.",
        )
    clips, problems = [], []
    for name, path in entries:
        try:
            caption = _caption(name, path, data)
            if path.is_dir():
                frames = _folder_frames(path, resolution)
            elif path.suffix.lower() == ".gif":
                frames = _gif_frames(path, resolution)
            else:
                frames = _video_frames(path, resolution)
            drawings = frames if keep_holds else drop_holds(frames)
            if len(drawings) < min_frames:
                held = len(frames) - len(drawings)
                note = f" ({held} more repeat the drawing before them)" if held else ""
                raise ClipError(f"'{name}' has {len(drawings)} drawings{note}; training uses {min_frames} per sample")
            clips.append(Clip(name, caption, np.stack(drawings), len(frames) - len(drawings)))
        except ClipError as exc:
            problems.append(str(exc))
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  … and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise InputError(
            f"{len(problems)} of {len(entries)} clips in '{data}' cannot be used:\n  {shown}{more}",
            "Fix or remove these clips (captions: caption.txt in the clip folder or <clip>.txt beside it; "
            "too few drawings: lower --frames, or --keep-holds to train on repeated frames too).",
        )
    return clips


def write_previews(clips: list[Clip], folder: Path) -> Path:
    """One contact sheet per clip of the frames exactly as training sees them."""
    from flipsketch.outputs import contact_sheet

    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        contact_sheet([Image.fromarray(frame, "L") for frame in clip.frames], columns=8).save(
            folder / f"{clip.name}.png"
        )
    return folder
