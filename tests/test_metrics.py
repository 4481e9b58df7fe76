"""The paper's metrics (CLIP, X-CLIP) on tiny random models in the published
layouts, the offline chamfer similarity, and best-of-N variant ranking."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from flipsketch.errors import ModelNotFoundError
from flipsketch.metrics import ChamferScorer, chamfer_similarity, load_clip, load_xclip
from flipsketch.params import AnimateParams
from flipsketch.pipeline import Animation
from flipsketch.ranking import rank_variants


def drawing(offset: int = 0, size: int = 64, width: int = 1) -> Image.Image:
    """A white canvas with one horizontal line at row 20 + offset."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(10, 20 + offset), (50, 20 + offset)], fill=0, width=width)
    return image


def noise_frames(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8), "L") for _ in range(count)]


def test_published_layouts_have_processor_and_tokenizer_files(metric_models) -> None:
    for folder in metric_models:
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"} <= names
        assert "processor_config.json" in names or "preprocessor_config.json" in names
    assert json.loads((metric_models[1] / "config.json").read_text())["model_type"] == "xclip"


def test_clip_consistency_is_the_mean_cosine_to_the_sketch(metric_models) -> None:
    clip = load_clip(str(metric_models[0]))
    sketch, frames = noise_frames(1, 0)[0], noise_frames(3, 1)
    pixels = clip.processor(images=[i.convert("RGB") for i in [sketch, *frames]], return_tensors="pt").pixel_values
    with torch.no_grad():  # by hand: pooled vision output through the projection, then cosines
        pooled = clip.model.vision_model(pixel_values=pixels).pooler_output
        embeddings = clip.model.visual_projection(pooled).numpy()
    cosines = [float(e @ embeddings[0] / (np.linalg.norm(e) * np.linalg.norm(embeddings[0]))) for e in embeddings[1:]]
    assert clip.consistency(sketch, frames) == pytest.approx(np.mean(cosines), abs=1e-5)
    assert clip.consistency(sketch, [sketch, sketch]) == pytest.approx(1.0, abs=1e-5)
    assert len(set(np.round(cosines, 4))) == 3  # the frames really differ: the mean is not trivially one value


def test_xclip_alignment_is_the_video_text_cosine(metric_models) -> None:
    xclip = load_xclip(str(metric_models[1]))
    frames, prompt = noise_frames(6, 2), "a cat turns its head"
    picked = xclip.clip_frames(frames)
    assert len(picked) == 4  # the model's num_frames, evenly spaced over 6
    pixels = xclip.processor.image_processor(picked, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 4, 3, 32, 32)  # VideoMAE's processor, as in the published layout
    tokens = xclip.processor.tokenizer([prompt], padding=True, return_tensors="pt")
    with torch.no_grad():  # by hand: X-CLIP's own logit divided by its logit scale
        out = xclip.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels)
    expected = (out.logits_per_video / xclip.model.logit_scale.exp()).item()
    score = xclip.alignment(frames, prompt)
    assert score == pytest.approx(expected, abs=1e-5)
    assert score != pytest.approx(xclip.alignment(frames, "a bird flaps its wings"), abs=1e-6)


def test_missing_metric_model_names_the_download_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError) as info:
        load_clip("openai/clip-vit-base-patch32")
    assert "flipsketch model download openai/clip-vit-base-patch32" in str(info.value)


@pytest.mark.parametrize("shift", [0, 1, 3, 6])
def test_chamfer_similarity_of_a_shifted_line(shift: int) -> None:
    """Every ink pixel of a line shifted by k rows is k pixels from the other line."""
    score = chamfer_similarity(drawing(), drawing(shift))
    assert score == pytest.approx(1 - shift / (0.1 * np.hypot(64, 64)), abs=1e-9)


def test_chamfer_similarity_edge_cases() -> None:
    blank = Image.new("L", (64, 64), 255)
    assert chamfer_similarity(drawing(), blank) == 0.0
    assert chamfer_similarity(drawing(), drawing(40)) == 0.0  # further than 10 % of the diagonal: clipped
    big = drawing(size=64).resize((128, 128), Image.Resampling.NEAREST)
    assert chamfer_similarity(drawing(), big) == pytest.approx(1.0, abs=0.02)  # compared at the sketch's size


def test_variants_are_ranked_best_first_and_failures_hidden() -> None:
    sketch = drawing()
    shifts = [5, 0, 2]  # seeds 10, 11, 12
    frames = [[drawing(s), drawing(s)] for s in shifts]
    params = AnimateParams(prompt="x", seed=10, variants=3, frames=2, min_score=0.7)
    animation = rank_variants(Animation(frames, params), sketch, ChamferScorer())
    assert [e["seed"] for e in animation.ranking] == [11, 12, 10]
    scores = [e["score"] for e in animation.ranking]
    assert scores[0] == 1.0 and scores == sorted(scores, reverse=True)
    assert [e["hidden"] for e in animation.ranking] == [False, False, True]  # 1 − 5/9.05 < 0.7
    assert animation.score_method == "chamfer"
