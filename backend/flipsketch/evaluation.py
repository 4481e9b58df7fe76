"""`flipsketch eval`: the paper's Table 1 on finished runs, or on a grid.

* `score_runs(folders)` scores result folders written by animate/extend/batch.
* `run_grid(...)` animates every sketch × seed under each row of `ROWS` (the
  paper's ablation plus our A/B switches) and scores every clip. Each cell's
  scores are written to `OUT/cells/<row>/<sketch>__seed<seed>.json` atomically
  as soon as it is done, so a killed grid continues where it stopped; the
  grid's settings are kept in `OUT/grid.json` and a rerun with other settings
  is refused rather than mixed in.

Scores per clip: sketch-to-video consistency (CLIP, in [−1, 1]) and
text-to-video alignment (X-CLIP, in [−1, 1]); a table row is their mean ±
standard error over its clips (sample standard deviation / √n).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from flipsketch.bench import plain_text_to_video
from flipsketch.errors import InputError
from flipsketch.metrics import ClipScorer, XClipScorer
from flipsketch.models import SketchModel
from flipsketch.params import AnimateParams
from flipsketch.pipeline import animate, postprocess
from flipsketch.sketch import prepare_image


@dataclass(frozen=True)
class Row:
    key: str  # folder name of its cells
    label: str  # as in the table
    overrides: dict[str, Any] | None  # AnimateParams changes; None = plain text-to-video


ROWS: tuple[Row, ...] = (
    Row("default", "FlipSketch (default)", {}),
    Row("lambda_0", "λ = 0", {"motion": 1.0}),
    Row("lambda_1", "λ = 1", {"motion": 0.0}),
    Row("no_alignment", "without frame alignment", {"align": False}),
    Row("no_composition", "without C^T and C^S", {"compose_spatial": False, "compose_temporal": False}),
    Row("text_to_video", "text-to-video (same model)", None),
    Row("reference_released", "reference = released", {"reference": "released"}),
    Row("released_input_range", "released_input_range", {"released_input_range": True}),
)
SKETCH_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that `path` holds either the old or the complete new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def parse_seeds(text: str) -> list[int]:
    """ "0-2" -> [0, 1, 2]; "3,5" -> [3, 5]; "0-1,7" -> [0, 1, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match[2] and int(match[2]) < int(match[1])):
            raise InputError(f"Seeds '{text}' cannot be read.", "Write a range or a list, e.g. 0-2 or 0,3,7.")
        seeds += range(int(match[1]), int(match[2] or match[1]) + 1)
    return list(dict.fromkeys(seeds))


def score_clip(
    clip: ClipScorer, xclip: XClipScorer, sketch: Image.Image, frames: list[Image.Image], prompt: str
) -> dict[str, float]:
    """{"consistency": CLIP sketch-to-video, "alignment": X-CLIP text-to-video}."""
    return {"consistency": clip.consistency(sketch, frames), "alignment": xclip.alignment(frames, prompt)}


def summarise(values: list[float]) -> dict[str, float | int | None]:
    """Mean and standard error (None for fewer than two values) of `values`."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"n": n, "mean": mean, "se": se}


def table(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Row label -> {"consistency": summary, "alignment": summary}."""
    return {
        label: {metric: summarise([c[metric] for c in cells]) for metric in ("consistency", "alignment")}
        for label, cells in rows.items()
    }


def markdown(summary: dict[str, dict[str, Any]], title: str) -> str:
    def cell(s: dict[str, Any]) -> str:
        return f"{s['mean']:.4f}" + (f" ± {s['se']:.4f}" if s["se"] is not None else "")

    lines = [
        f"{title}\n",
        "| row | clips | sketch-to-video consistency (CLIP) ↑ | text-to-video alignment (X-CLIP) ↑ |",
        "|---|---|---|---|",
    ]
    for label, s in summary.items():
        lines.append(f"| {label} | {s['consistency']['n']} | {cell(s['consistency'])} | {cell(s['alignment'])} |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, summary: dict[str, Any], text: str) -> None:
    write_json_atomic(out / "table.json", summary)
    tmp = out / f".table.md.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / "table.md")


def run_frames(folder: Path) -> Iterator[tuple[str, Image.Image, list[Image.Image], str]]:
    """(label, sketch, frames, prompt) for every variant of a result folder."""
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        sketch = Image.open(folder / "sketch.png")
        sketch.load()
    except (OSError, ValueError) as exc:
        raise InputError(
            f"'{folder}' is not a FlipSketch result ({exc}).", "Pass folders written by animate, extend or batch."
        ) from None
    for sub, names in record["files"].items():
        frames = [Image.open(folder / sub / name) for name in names if name.startswith("frame_")]
        label = folder.name if sub == "." else f"{folder.name}/{sub}"
        yield label, sketch, frames, record["params"]["prompt"]


def score_runs(folders: list[Path], clip: ClipScorer, xclip: XClipScorer) -> dict[str, dict[str, float]]:
    """Variant label -> scores, for every variant of every result folder."""
    return {
        label: score_clip(clip, xclip, sketch, frames, prompt)
        for folder in folders
        for label, sketch, frames, prompt in run_frames(Path(folder))
    }


@dataclass
class Grid:
    """Every sketch × seed × row; `settings` are the AnimateParams shared by all cells."""

    sketches: dict[str, Path]  # name (file stem) -> image
    prompts: dict[str, str]  # name -> prompt
    seeds: list[int]
    settings: dict[str, Any]
    out: Path
    rows: tuple[Row, ...] = ROWS

    def cell_path(self, row: Row, name: str, seed: int) -> Path:
        return self.out / "cells" / row.key / f"{name}__seed{seed}.json"

    def cells(self) -> list[tuple[Row, str, int]]:
        return [(row, name, seed) for row in self.rows for name in self.sketches for seed in self.seeds]

    def params(self, row: Row, name: str, seed: int) -> AnimateParams:
        data = {**self.settings, **(row.overrides or {}), "prompt": self.prompts[name], "seed": seed, "variants": 1}
        return AnimateParams.from_dict(data)

    def record(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "seeds": self.seeds,
            "sketches": {name: str(path) for name, path in self.sketches.items()},
            "prompts": self.prompts,
        }


def load_grid(sketches_dir: Path, prompts_file: Path, seeds: list[int], settings: dict[str, Any], out: Path) -> Grid:
    """The grid a command line describes; every sketch needs a prompt in the
    prompts JSON (keyed by file name or stem). Checks the shared settings."""
    if not Path(sketches_dir).is_dir():
        raise InputError(f"Sketch folder '{sketches_dir}' does not exist.", "Pass a folder of sketch images.")
    sketches = {
        p.stem: p.resolve() for p in sorted(Path(sketches_dir).iterdir()) if p.suffix.lower() in SKETCH_SUFFIXES
    }
    if not sketches:
        raise InputError(f"'{sketches_dir}' holds no sketch images.", f"Add {', '.join(SKETCH_SUFFIXES)} files.")
    try:
        given = json.loads(Path(prompts_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Prompts file '{prompts_file}' cannot be read ({exc}).", "Pass a JSON file.") from None
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise InputError("The prompts file must be a JSON object {sketch name: prompt}.", 'E.g. {"cat": "…"}.')
    prompts = {name: given.get(path.name, given.get(name)) for name, path in sketches.items()}
    missing = [name for name, prompt in prompts.items() if not prompt]
    if missing:
        raise InputError(f"No prompt for sketch(es) {', '.join(missing)}.", f"Add them to '{prompts_file}'.")
    grid = Grid(sketches, {name: str(prompt) for name, prompt in prompts.items()}, seeds, settings, Path(out))
    for row in grid.rows:  # every row's parameters are valid before any work starts
        grid.params(row, next(iter(sketches)), seeds[0])
    return grid


def check_resume(grid: Grid) -> None:
    """Start a grid, or continue one with the same settings; refuse to mix."""
    path = grid.out / "grid.json"
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier != json.loads(json.dumps(grid.record())):
            raise InputError(
                f"'{grid.out}' holds a grid with other settings ({path}).",
                "Use a new --out folder, or the same sketches, prompts, seeds and options to continue it.",
            )
    write_json_atomic(path, grid.record())


def generate_frames(model: SketchModel, row: Row, sketch: Image.Image, params: AnimateParams) -> list[Image.Image]:
    """One clip of a row: FlipSketch, or plain text-to-video from the same model."""
    if row.overrides is None:
        images = plain_text_to_video(model, params).numpy()[0]
        return [postprocess(image, params) for image in images]
    return animate(model, sketch, params).frames[0]


def run_grid(
    grid: Grid,
    model: SketchModel,
    clip: ClipScorer,
    xclip: XClipScorer,
    on_cell: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Animate and score every cell not already on disk; return the table
    (row label -> summaries). `on_cell(done, total)` follows progress."""
    check_resume(grid)
    cells = grid.cells()
    results: dict[str, list[dict[str, float]]] = {row.label: [] for row in grid.rows}
    for done, (row, name, seed) in enumerate(cells, start=1):
        path = grid.cell_path(row, name, seed)
        if path.is_file():
            scores = json.loads(path.read_text(encoding="utf-8"))
        else:
            params = grid.params(row, name, seed)
            sketch = prepare_image(grid.sketches[name], params.width, params.height)
            frames = generate_frames(model, row, sketch, params)
            scores = {**score_clip(clip, xclip, sketch, frames, params.prompt), "row": row.key, "sketch": name}
            write_json_atomic(path, {**scores, "seed": seed})
        results[row.label].append(scores)
        if on_cell:
            on_cell(done, len(cells))
    return table(results)


def grid_settings(frames: int, steps: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The AnimateParams every cell shares (checked by AnimateParams)."""
    settings = {"frames": frames, "steps": steps, **(extra or {})}
    AnimateParams.from_dict({**settings, "prompt": "-"})
    return settings
