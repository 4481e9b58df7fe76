"""`flipsketch eval`: finished runs and the resumable ablation grid (tiny models)."""

import json
from pathlib import Path

import pytest

from flipsketch.cli import main
from flipsketch.errors import InputError
from flipsketch.evaluation import ROWS, parse_seeds, summarise

from .conftest import ROOT

SMALL = ["--frames", "2", "--steps", "2", "--width", "64", "--height", "64"]


@pytest.fixture
def grid_inputs(tmp_path: Path) -> tuple[Path, Path]:
    sketches = tmp_path / "sketches"
    sketches.mkdir()
    for name in ("cat", "cat2"):
        (sketches / f"{name}.png").write_bytes((ROOT / "examples" / "cat.png").read_bytes())
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"cat.png": "the cat turns its head", "cat2": "the cat meows"}))
    return sketches, prompts


def eval_grid(model: Path, metrics, sketches: Path, prompts: Path, out: Path, *extra: str) -> int:
    clip, xclip = metrics
    grid = ["--grid", str(sketches), "--prompts", str(prompts), "--seeds", "0", "--out", str(out)]
    models = ["--model", str(model), "--clip-model", str(clip), "--xclip-model", str(xclip)]
    return main(["eval", *grid, *models, *SMALL, *extra])


def test_grid_scores_every_row_and_resumes(tiny_model_dir, metric_models, grid_inputs, tmp_path, capsys) -> None:
    sketches, prompts = grid_inputs
    out = tmp_path / "grid"
    assert eval_grid(tiny_model_dir, metric_models, sketches, prompts, out) == 0
    cells = sorted((out / "cells").rglob("*.json"))
    assert len(cells) == len(ROWS) * 2  # 2 sketches × 1 seed per row
    table = json.loads((out / "table.json").read_text())
    assert list(table) == [row.label for row in ROWS]
    for row in table.values():
        for metric in ("consistency", "alignment"):
            assert row[metric]["n"] == 2 and -1 <= row[metric]["mean"] <= 1 and row[metric]["se"] >= 0
    default = [json.loads(p.read_text()) for p in sorted((out / "cells" / "default").glob("*.json"))]
    assert table["FlipSketch (default)"]["consistency"] == pytest.approx(summarise([c["consistency"] for c in default]))
    assert "| λ = 0 | 2 |" in (out / "table.md").read_text() and "| λ = 0 | 2 |" in capsys.readouterr().out

    # A killed grid: two finished cells lost, one half-written temporary file left behind.
    mtimes = {p: p.stat().st_mtime_ns for p in cells}
    lost = [out / "cells" / "no_alignment" / "cat__seed0.json", out / "cells" / "text_to_video" / "cat2__seed0.json"]
    for path in lost:
        path.unlink()
    (out / "cells" / "default" / ".cat__seed0.json.tmp-1").write_text("{half")
    (out / "table.json").unlink()
    assert eval_grid(tiny_model_dir, metric_models, sketches, prompts, out) == 0
    redone = {p for p in cells if p.stat().st_mtime_ns != mtimes.get(p)}
    assert redone == set(lost)  # only the missing cells ran again
    assert json.loads((out / "table.json").read_text())["λ = 1"] == table["λ = 1"]

    # Other settings into the same folder are refused, not mixed in.
    capsys.readouterr()
    assert eval_grid(tiny_model_dir, metric_models, sketches, prompts, out, "--quality", "paper") == 2
    assert "holds a grid with other settings" in capsys.readouterr().err


def test_grid_needs_a_prompt_for_every_sketch(tiny_model_dir, metric_models, grid_inputs, tmp_path, capsys) -> None:
    sketches, prompts = grid_inputs
    prompts.write_text(json.dumps({"cat": "the cat turns its head"}))
    assert eval_grid(tiny_model_dir, metric_models, sketches, prompts, tmp_path / "grid") == 2
    assert "No prompt for sketch(es) cat2" in capsys.readouterr().err
    assert not (tmp_path / "grid").exists()


def test_variants_ranked_by_clip_and_eval_of_finished_runs(tiny_model_dir, metric_models, tmp_path, capsys) -> None:
    """`animate --clip-model` ranks variants by CLIP consistency; `eval` of the
    finished run measures the same consistency from the saved files."""
    run, clip, xclip = tmp_path / "run", *metric_models
    args = ["animate", str(ROOT / "examples" / "cat.png"), "--prompt", "the cat meows", "--model", str(tiny_model_dir)]
    size = ["--width", "64", "--height", "64", "--frames", "2", "--steps", "2", "--variants", "3"]
    assert main([*args, "--out", str(run), *size, "--clip-model", str(clip)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((run / "run.json").read_text())
    assert record["score_method"] == f"clip:{clip}"
    ranked = [v["seed"] for v in record["variants"]]
    assert sorted(ranked) == [0, 1, 2] and [v["score"] for v in record["variants"]] == sorted(
        (v["score"] for v in record["variants"]), reverse=True
    )
    listed = [int(line.split()[1]) for line in printed.splitlines() if line.strip().startswith("seed")]
    assert listed == ranked  # the CLI prints the variants best first

    out = tmp_path / "scores"
    assert main(["eval", str(run), "--clip-model", str(clip), "--xclip-model", str(xclip), "--out", str(out)]) == 0
    table = json.loads((out / "table.json").read_text())
    assert sorted(table) == ["run/variant_0", "run/variant_1", "run/variant_2"]
    assert all(row["consistency"]["n"] == 1 and row["consistency"]["se"] is None for row in table.values())
    for entry in record["variants"]:
        measured = table[f"run/variant_{entry['seed']}"]["consistency"]["mean"]
        assert measured == pytest.approx(entry["score"], abs=1e-5)
    assert "run/variant_1" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "seeds"), [("0-2", [0, 1, 2]), ("3,5", [3, 5]), ("0-1,7,1", [0, 1, 7])])
def test_seed_ranges(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["2-0", "a", "1,,2"])
def test_bad_seed_ranges_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="Seeds"):
        parse_seeds(text)
