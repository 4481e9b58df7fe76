"""`flipsketch batch`: a whole storyboard, resumable, locally or on a Ray cluster.

A board is JSON::

    {"schema": "flipsketch.board", "version": 1,
     "defaults": {"frames": 10, "motion": 0.5, ...},      # AnimateParams fields
     "shots": [{"name": "sh010", "sketch": "sh010.png",     # or "strokes": {...}
                "prompt": "the cat turns its head", "timing": 2,
                "params": {"seed": 3}}, ...]}

Each shot is written like `flipsketch animate` writes a clip, to OUT/<name>/,
atomically. A shot whose folder holds a run.json made from the same inputs is
skipped on a rerun, so an interrupted batch resumes where it stopped. A shot
that fails is reported and the others go on. OUT/report.json lists every
shot's outcome; OUT/animatic.mp4 plays the finished shots in board order at
their timing, with the shot name burned in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from flipsketch import SCHEMA_VERSION
from flipsketch.errors import FlipSketchError, InputError
from flipsketch.jsonio import write_json
from flipsketch.lora import check_folder
from flipsketch.lora import fingerprint as lora_fingerprint
from flipsketch.params import AnimateParams
from flipsketch.ranking import Scorer, rank_variants
from flipsketch.validation import parse_json

_SHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# What runs a storyboard's shots: takes (shot, sketch) pairs and yields
# (shot, sketch, animation | FlipSketchError, model) as shots finish.
Generate = Callable[[list[tuple["Shot", Any]]], Iterator[tuple["Shot", Any, Any, Any]]]


@dataclass
class Shot:
    name: str
    params: AnimateParams
    timing: int
    sketch: Path | None
    strokes: dict[str, Any] | None

    def fingerprint(self) -> str:
        """Changes when anything that decides the shot's frames changes,
        including a LoRA retrained into the same folder."""
        source = self.sketch.read_bytes() if self.sketch else json.dumps(self.strokes, sort_keys=True).encode()
        loras = [lora_fingerprint(check_folder(ref.path)) for ref in self.params.loras]
        payload = json.dumps([self.params.to_dict(), loras], sort_keys=True).encode() + hashlib.sha256(source).digest()
        return hashlib.sha256(payload).hexdigest()

    def load_sketch(self) -> Image.Image:
        from flipsketch.sketch import prepare_image, rasterize_strokes

        if self.sketch is not None:
            return prepare_image(self.sketch, self.params.width, self.params.height)
        assert self.strokes is not None  # a shot has a sketch image or strokes (read_board checks)
        return rasterize_strokes(self.strokes, self.params.width, self.params.height)


def _board_error(
    where: str, problem: str, fix: str = "See the board schema in `flipsketch batch --help`."
) -> InputError:
    return InputError(f"Board {where}: {problem}.", fix)


def parse_board(path: Path) -> list[Shot]:
    """Read and check a board; every problem names the shot and field."""
    try:
        board = parse_json(Path(path).read_bytes(), f"Board file '{path}'")
    except FileNotFoundError:
        raise InputError(f"Board file '{path}' does not exist.", "Check the path.") from None
    except OSError as exc:
        raise InputError(f"Board file '{path}' cannot be read ({exc}).", "Check its permissions.") from None
    if not isinstance(board, dict) or board.get("schema") != "flipsketch.board":
        raise _board_error("file", "'schema' must be \"flipsketch.board\"")
    if board.get("version") != SCHEMA_VERSION:
        raise _board_error("file", f"version {board.get('version')!r} is not supported (this backend reads 1)")
    defaults = board.get("defaults", {})
    shots_data = board.get("shots")
    if not isinstance(defaults, dict):
        raise _board_error("'defaults'", "must be an object of parameters")
    if not isinstance(shots_data, list) or not shots_data:
        raise _board_error("'shots'", "must be a non-empty list")
    shots, seen = [], set()
    for index, data in enumerate(shots_data):
        where = f"shots[{index}]"
        if not isinstance(data, dict):
            raise _board_error(where, "must be an object")
        name = data.get("name")
        if not isinstance(name, str) or not _SHOT_NAME.match(name):
            raise _board_error(f"{where}.name", f"{name!r} is not a usable folder name (letters, digits, _ . -)")
        if name in seen:
            raise _board_error(f"{where}.name", f"'{name}' is used twice")
        seen.add(name)
        overrides = data.get("params", {})
        if not isinstance(overrides, dict):
            raise _board_error(f"{where}.params", "must be an object")
        try:
            params = AnimateParams.from_dict(
                {**defaults, **overrides, "prompt": data.get("prompt", defaults.get("prompt"))}
            )
        except InputError as exc:
            raise _board_error(f"{where} ({name})", exc.message.rstrip("."), exc.hint) from None
        timing = data.get("timing", 2)
        if timing not in (1, 2, 3):
            raise _board_error(f"{where}.timing", f"is {timing!r}", "Use 1, 2 or 3 (ones, twos, threes).")
        has_sketch, has_strokes = "sketch" in data, "strokes" in data
        if has_sketch == has_strokes:
            raise _board_error(where, "needs exactly one of 'sketch' (a file) and 'strokes'")
        sketch = (Path(path).parent / data["sketch"]) if has_sketch else None
        shots.append(Shot(name, params, timing, sketch, data.get("strokes")))
    return shots


def is_done(shot: Shot, out: Path) -> bool:
    record = out / shot.name / "run.json"
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("shot_fingerprint") == shot.fingerprint()
    except (OSError, ValueError):
        return False


def run_board(
    shots: list[Shot],
    out: Path,
    generate: Generate,
    force: bool = False,
    log: Callable[[str], None] = print,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """Run every shot not yet done through `generate` (sequential or Ray),
    which takes (shot, sketch) pairs and yields (shot, sketch, animation |
    FlipSketchError, model) as shots finish. A shot with `variants > 1` keeps
    all of them, ranked by `scorer` (default: offline chamfer similarity);
    the best one goes into the animatic and the report."""
    from flipsketch.outputs import write_animation

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    todo = []
    for shot in shots:
        if not force and is_done(shot, out):
            report[shot.name] = {"state": "skipped", "reason": "already done with the same inputs"}
            continue
        try:
            todo.append((shot, shot.load_sketch()))  # prepared once: sent to the sampler, saved beside the frames
        except FlipSketchError as exc:
            report[shot.name] = {"state": "failed", "reason": str(exc)}
            log(f"{shot.name}: failed: {exc.message}")
    for shot, sketch, result, model in generate(todo):
        if isinstance(result, FlipSketchError):
            report[shot.name] = {"state": "failed", "reason": str(result)}
            log(f"{shot.name}: failed: {result.message}")
            continue
        extra = {"shot": shot.name, "shot_fingerprint": shot.fingerprint(), "timing": shot.timing}
        if scorer is not None:
            rank_variants(result, sketch, scorer)
        write_animation(result, model, out / shot.name, sketch, overwrite=True, extra=extra)  # ranks if not yet
        best = result.ranking[0]
        report[shot.name] = {
            "state": "done",
            "seconds": round(result.stats["total_s"], 2),
            "best_seed": best["seed"],  # the variant the animatic uses
            "score": best["score"],
        }
        log(f"{shot.name}: done")
    ordered = {shot.name: report[shot.name] for shot in shots}
    write_json(out / "report.json", ordered)
    write_animatic(shots, out)
    return ordered


def sequential(model: Any) -> Generate:
    """Run shots one after another on one loaded model."""
    from flipsketch.pipeline import animate

    def generate(work: list[tuple[Shot, Any]]) -> Iterator[tuple[Shot, Any, Any, Any]]:
        for shot, sketch in work:
            try:
                yield shot, sketch, animate(model, sketch, shot.params), model
            except FlipSketchError as exc:
                yield shot, sketch, exc, model

    return generate


def write_animatic(shots: list[Shot], out: Path, fps: int = 24) -> Path | None:
    """All finished shots in board order, each frame held for its timing, the
    shot name burned in at the top left."""
    from flipsketch.outputs import write_mp4

    frames: list[Image.Image] = []
    for shot in shots:
        folder = out / shot.name
        if not (folder / "run.json").is_file():
            continue
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        ranked = record.get("variants") or [{"folder": next(iter(record["files"]))}]
        sub = ranked[0]["folder"]  # the best variant
        for name in record["files"][sub]:
            if name.startswith("frame_"):
                frame = Image.open(folder / sub / name).convert("RGB")
                ImageDraw.Draw(frame).text((6, 4), shot.name, fill=(220, 30, 30))
                frames += [frame] * shot.timing
    if not frames:
        return None
    size = frames[0].size
    path = out / "animatic.mp4"
    write_mp4([f if f.size == size else f.resize(size) for f in frames], path, fps)
    return path
