"""Best-of-N: rank an animation's variants by consistency with the drawing.

The released app generates three seeds and hides those whose CLIP similarity
to the sketch is below 0.9. Here every variant is scored (CLIP when a CLIP
model is configured, else the offline chamfer similarity of `metrics`), the
scores go into run.json, variants are listed best first, and those below
`params.min_score` are marked hidden (their files are kept).
"""

from __future__ import annotations

import os
from typing import Protocol

from PIL import Image

from flipsketch.metrics import ChamferScorer, load_clip
from flipsketch.pipeline import Animation

CLIP_ENV = "FLIPSKETCH_CLIP_MODEL"  # Hugging Face id or folder of the CLIP model that ranks variants


class Scorer(Protocol):
    method: str

    def score(self, sketch: Image.Image, frames: list[Image.Image]) -> float: ...


def variant_scorer(clip_model: str | None = None, device: str = "cpu") -> Scorer:
    """CLIP consistency when a CLIP model is named (argument, else $FLIPSKETCH_CLIP_MODEL),
    otherwise the offline chamfer similarity. Raises ModelNotFoundError for a
    named CLIP model that is neither a folder nor in the cache (and cannot be downloaded)."""
    name = clip_model or os.environ.get(CLIP_ENV)
    return load_clip(name, device) if name else ChamferScorer()


def rank_variants(animation: Animation, sketch: Image.Image, scorer: Scorer) -> Animation:
    """Score every variant against `sketch`; set `animation.ranking` to
    [{"seed", "score", "hidden"}] ordered best first (hidden: score below
    params.min_score) and `animation.score_method`. Returns the animation."""
    minimum = animation.params.min_score
    ranking = [
        {"seed": seed, "score": round(scorer.score(sketch, frames), 6)}
        for seed, frames in zip(animation.seeds(), animation.frames, strict=True)
    ]
    ranking.sort(key=lambda entry: -entry["score"])
    for entry in ranking:
        entry["hidden"] = minimum is not None and entry["score"] < minimum
    animation.ranking, animation.score_method = ranking, scorer.method
    return animation
