"""The main job end to end: animate the bundled example sketch.

Uses the model named by FLIPSKETCH_MODEL (Hugging Face id or folder); without
it, a tiny random model is created once under outputs/models/ so the whole
path runs offline (its output is noise, and the run says so).
Outputs go to outputs/demo/.
"""

import os
import sys
from pathlib import Path

from flipsketch.cli import main

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs"


def demo_args() -> list[str]:
    args = [
        "animate",
        str(ROOT / "examples" / "cat.png"),
        "--prompt",
        "the cat turns its head and meows",
        "--out",
        str(OUT / "demo"),
        "--overwrite",
    ]
    if os.environ.get("FLIPSKETCH_MODEL"):
        return args
    tiny = OUT / "models" / "tiny"
    if not (tiny / "model_index.json").is_file():
        main(["model", "create-tiny", str(tiny)])
    # The tiny model at 64x64 latents' worth of pixels keeps the demo to seconds on a CPU.
    return [*args, "--model", str(tiny), "--width", "64", "--height", "64", "--output-size", "256"]


if __name__ == "__main__":
    code = main(demo_args())
    if code == 0:
        print(f"Demo outputs: {OUT / 'demo'} (frames, animation.gif, animation.mp4, contact_sheet.png, run.json)")
    sys.exit(code)
