"""Small synthetic training clips: line drawings that move from frame to frame."""

from pathlib import Path

from PIL import Image, ImageDraw


def draw_frame(index: int, offset: int = 0, size: tuple[int, int] = (80, 80)) -> Image.Image:
    """A ball that rolls right while a line tilts: motion a LoRA can learn."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    x = 10 + 8 * index + 5 * offset
    draw.ellipse([x, 20, x + 30, 50], outline=0, width=3)
    draw.line([5, 70, 75, 60 - 5 * index], fill=0, width=2)
    return image


def write_clips(folder: Path, count: int = 3, frames: int = 6) -> Path:
    """`count` PNG-folder clips with captions in `folder` (the DATA layout)."""
    for c in range(count):
        clip = folder / f"clip{c}"
        clip.mkdir(parents=True)
        for f in range(frames):
            draw_frame(f, c).save(clip / f"frame_{f:04d}.png")
        (clip / "caption.txt").write_text(f"a ball rolls to the right, take {c}\n", encoding="utf-8")
    return folder
