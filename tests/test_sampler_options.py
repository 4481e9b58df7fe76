"""Sampler options of the quality issue: the reference construction switch,
resize-then-threshold output, scheduler configurations, quality presets."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from flipsketch.attention import flipsketch_attention
from flipsketch.errors import InputError, ModelCorruptError
from flipsketch.models import load_model
from flipsketch.params import QUALITY_PRESETS, QUALITY_TIME_RATIOS, STANDARD_ALIGN_TOL, AnimateParams
from flipsketch.pipeline import (
    FlipSketchSampler,
    ReleasedReference,
    animate,
    ddim_move,
    encode_sketch,
    postprocess,
    to_noise,
)
from flipsketch.sketch import prepare_image

from .conftest import ROOT

SMALL = dict(prompt="the cat turns its head", width=64, height=64, frames=4, steps=4, align_iters=2, align_tol=0.0)


@pytest.fixture(scope="module")
def sketch():
    return prepare_image(ROOT / "examples" / "cat.png", 64, 64)


def with_temporal_layers(model, scale: float):
    """A copy of `model` whose temporal layers (temporal convolutions and
    temporal attention) output `scale` × random weights; 0 makes them output zero."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in model.unet.named_modules():
            temporal_attention = "temp_attentions" in name or "transformer_in" in name
            if name.endswith("conv4.3") or (temporal_attention and name.endswith("proj_out")):
                for p in module.parameters():
                    p.copy_(scale * torch.randn(p.shape, generator=generator))
    return model


def generate(model, sketch, **overrides) -> torch.Tensor:
    return FlipSketchSampler(model, AnimateParams(**{**SMALL, **overrides})).generate(sketch)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def classic_inversion_of_one_frame(sampler: FlipSketchSampler, z0: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """The released inversion order, ε(x_{t−1}, t) then a step up, on a single frame, by hand."""
    x = z0
    for i in range(sampler.params.steps - 1, -1, -1):
        with torch.no_grad():
            eps = sampler.unet(x, sampler.timesteps[i], null)
        x = ddim_move(x, eps, sampler.alphas[i + 1], sampler.alphas[i])
    return x


def video_effects(model, sketch) -> tuple[float, float]:
    """How far the released construction's video passes are from single-frame
    passes: (x_T^r of the 5-copy inversion vs one frame, η of the F-copy
    reference pass vs one frame), as relative L2 differences."""
    params = AnimateParams(**{**SMALL, "reference": "released"})
    sampler = FlipSketchSampler(model, params)
    null = model.encode_prompts([""])
    with flipsketch_attention(model.unet, sampler.control):
        z0 = encode_sketch(model, sketch, params)
        top = sampler.invert_released(z0, null)
        single_top = classic_inversion_of_one_frame(sampler, z0, null)
        _, eta, _ = ReleasedReference(sampler, top, null).step(0)
        with torch.no_grad():
            single_eta = sampler.unet(top, sampler.timesteps[0], null)
    return relative(top, single_top), relative(eta, single_eta)


def test_released_video_passes_equal_single_frames_only_without_temporal_layers(tiny_model, sketch) -> None:
    """The released construction inverts 5 copies and re-denoises F copies: with
    temporal layers that output zero the copies never interact (identical to one
    frame), with non-zero temporal weights they do, so the constructions differ."""
    assert max(video_effects(with_temporal_layers(tiny_model, 0.0), sketch)) < 1e-5
    inversion_effect, pass_effect = video_effects(with_temporal_layers(tiny_model, 0.05), sketch)
    assert inversion_effect > 0.01 and pass_effect > 0.01, (inversion_effect, pass_effect)


def test_the_reference_switch_changes_the_animation(tiny_model, sketch) -> None:
    released = generate(tiny_model, sketch, reference="released")
    assert relative(released, generate(tiny_model, sketch)) > 0.01
    assert torch.equal(released, generate(tiny_model, sketch, reference="released"))  # still deterministic


def test_released_reference_runs_its_passes_where_documented(tiny_model, sketch) -> None:
    params = AnimateParams(**{**SMALL, "steps": 6, "tau_align": 2, "tau_compose": 3, "reference": "released"})
    events = []
    animation = animate(tiny_model, sketch, params, progress=events.append)
    reference = [e.step for e in events if e.stage == "reference"]
    assert reference == [1, 2, 3, 4]  # one F-copy pass per step while alignment (i < 2) or composition (i ≤ 3) needs it
    assert [e.step for e in events if e.stage == "invert"] == list(range(1, 7))  # classic order: one pass per level
    # 6 inversion + 4 reference + 2 × 2 alignment + 6 sampling passes
    assert animation.stats["unet_calls"] == 6 + 4 + 4 + 6


def line_frame(size: int, canvas: int = 1024, width: int = 40) -> np.ndarray:
    """A grey, anti-aliased slanted line as the VAE would decode it: RGB in [0, 1]."""
    image = Image.new("L", (canvas, canvas), 255)
    ImageDraw.Draw(image).line([(0, 160), (canvas, 640)], fill=0, width=width)
    gray = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255
    return np.repeat(gray[..., None], 3, axis=-1)


def largest_row_jump(binary: np.ndarray) -> int:
    """Largest change of the line's first ink column from one row to the next."""
    firsts = [int(np.argmax(row == 0)) for row in binary if (row == 0).any()]
    return int(np.abs(np.diff(firsts)).max())


def test_upscaled_frames_are_binary_and_smooth() -> None:
    params = AnimateParams(prompt="x", output_size=256)
    out = np.asarray(postprocess(line_frame(64), params))
    assert out.shape == (256, 256) and set(np.unique(out)) == {0, 255}  # no grey, no ringing
    ideal = np.asarray(postprocess(line_frame(256), AnimateParams(prompt="x")))  # drawn at 256² directly
    assert (out != ideal).mean() < 0.01
    # The line rises 480/1024 per column: 2.1 columns per row. Thresholding at 64² and
    # upscaling afterwards makes 4-row stairs that jump ~8.5 columns.
    assert largest_row_jump(out) <= 4
    old = np.asarray(
        postprocess(line_frame(64), AnimateParams(prompt="x")).resize((256, 256), Image.Resampling.LANCZOS)
    )
    assert len(np.unique(old)) > 2 and largest_row_jump(np.where(old < 128, 0, 255)) >= 8


def copy_with_scheduler(tiny_model_dir: Path, tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"clip_sample": True}, "clip_sample"),
        ({"thresholding": True}, "thresholding"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
        ({"prediction_type": "flow"}, "prediction_type 'flow'"),
    ],
)
def test_unimplemented_scheduler_settings_are_refused_at_load(tiny_model_dir, tmp_path, changes, named) -> None:
    with pytest.raises(ModelCorruptError, match=named) as info:
        load_model(str(copy_with_scheduler(tiny_model_dir, tmp_path, **changes)))
    assert "scheduler_config.json" in info.value.hint


def test_v_and_sample_predictions_are_converted_to_noise(tiny_model) -> None:
    scheduler = copy.deepcopy(tiny_model.scheduler)
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 2, 8, 8, generator=generator), torch.randn(1, 4, 2, 8, 8, generator=generator)
    t = 500
    alpha = scheduler.alphas_cumprod[t]
    xt = alpha.sqrt() * x0 + (1 - alpha).sqrt() * eps
    for kind, output in [
        ("epsilon", eps),
        ("v_prediction", alpha.sqrt() * eps - (1 - alpha).sqrt() * x0),
        ("sample", x0),
    ]:
        scheduler.register_to_config(prediction_type=kind)
        assert torch.allclose(to_noise(output, xt, scheduler, t), eps, atol=1e-5), kind


def test_a_v_prediction_model_loads_and_samples(tiny_model_dir, tmp_path, sketch) -> None:
    model = load_model(str(copy_with_scheduler(tiny_model_dir, tmp_path, prediction_type="v_prediction")))
    v = FlipSketchSampler(model, AnimateParams(**SMALL)).generate(sketch)
    model.scheduler.register_to_config(prediction_type="epsilon")
    eps = FlipSketchSampler(model, AnimateParams(**SMALL)).generate(sketch)
    assert torch.isfinite(v).all() and relative(v, eps) > 0.01  # the setting is honoured, not ignored


def test_quality_presets_set_their_parameters_and_given_fields_win() -> None:
    assert AnimateParams(prompt="x").align_tol == STANDARD_ALIGN_TOL > 0  # early-stopped by default
    draft = AnimateParams.from_dict({"prompt": "x", "quality": "draft"})
    paper = AnimateParams.from_dict({"prompt": "x", "quality": "paper"})
    assert not draft.align and paper.align and paper.align_tol == 0.0
    assert AnimateParams.from_dict({"prompt": "x", "quality": "paper", "align_tol": 0.05}).align_tol == 0.05
    assert set(QUALITY_TIME_RATIOS) == set(QUALITY_PRESETS)
    assert QUALITY_TIME_RATIOS["draft"] < QUALITY_TIME_RATIOS["standard"] <= 2.0 < QUALITY_TIME_RATIOS["paper"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"quality": "best"}, "quality"),
        ({"reference": "mine"}, "reference"),
        ({"min_score": 1.5}, "min_score"),
        ({"align_tol": -0.1}, "align_tol"),
    ],
)
def test_new_parameters_are_checked(data: dict, field: str) -> None:
    with pytest.raises(InputError, match=f"'{field}'"):
        AnimateParams.from_dict({"prompt": "x", **data})
