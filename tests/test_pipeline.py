"""The FlipSketch sampler against the paper, on the tiny model (CPU)."""

import copy

import pytest
import torch
from PIL import Image

from flipsketch.attention import flipsketch_attention
from flipsketch.errors import Cancelled, InputError
from flipsketch.params import AnimateParams
from flipsketch.pipeline import FlipSketchSampler, animate, ddim_move, encode_sketch
from flipsketch.progress import CancelToken
from flipsketch.sketch import prepare_image

from .conftest import ROOT

SMALL = dict(prompt="the cat turns its head", width=64, height=64, frames=4, steps=6, align_iters=2, align_tol=0.0)


@pytest.fixture(scope="module")
def sketch():
    """The cat prepared at the trained 256², reduced to the tiny models' 64² by
    area averaging: thin grey lines, like a drawing made at 64². (Preparing at
    64² directly thickens the lines to survive the 8× reduction.)"""
    return prepare_image(ROOT / "examples" / "cat.png", 256, 256).resize((64, 64), Image.Resampling.BOX)


def generate(model, sketch, **overrides) -> torch.Tensor:
    return FlipSketchSampler(model, AnimateParams(**{**SMALL, **overrides})).generate(sketch)


def test_spatial_and_temporal_composition_each_change_the_output(tiny_model, sketch) -> None:
    off = generate(tiny_model, sketch, tau_compose=-1, align=False)
    both = generate(tiny_model, sketch, align=False)
    spatial = generate(tiny_model, sketch, compose_temporal=False, align=False)
    temporal = generate(tiny_model, sketch, compose_spatial=False, align=False)
    for composed in (both, spatial, temporal):
        assert (composed - off).abs().max() > 1e-3
    assert (spatial - temporal).abs().max() > 1e-3


@pytest.fixture(scope="module")
def peaked_model(tiny_model):
    """The tiny model with attention as peaked as a trained model's.

    Random initialisation gives near-uniform attention, under which replacing
    a query changes nothing; scaling the attn1 query/key projections by 6
    gives logits with the spread of a trained network."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for name, module in model.unet.named_modules():
            if name.endswith("attn1"):
                module.to_q.weight.mul_(6)
                module.to_k.weight.mul_(6)
    return model


def test_composition_keeps_frame_0_closer_to_the_reference(peaked_model, sketch) -> None:
    """The joint prediction for frame 0 (video = reference + moving frames)
    is closer to the reference-alone prediction η with composition than without."""
    frames = 8
    params = AnimateParams(**{**SMALL, "frames": frames, "steps": 25, "guidance": 1.0})
    sampler = FlipSketchSampler(peaked_model, params)
    null = peaked_model.encode_prompts([""])
    with flipsketch_attention(peaked_model.unet, sampler.control):
        reference = sampler.invert(encode_sketch(peaked_model, sketch, params), null)
        x_ref, eta = reference.latents[0], reference.eps[0]
        sampler.control.records, sampler.control.spatial_frames = reference.records[0], frames
        for seed in range(4):
            noise = torch.randn(1, 4, frames, 8, 8, generator=torch.Generator().manual_seed(seed))
            video = x_ref + 0.3 * x_ref.std() * noise
            video[:, :, 0] = x_ref[:, :, 0]
            errors = {
                compose: (sampler.predict_noise(video, sampler.timesteps[0], null.repeat(2, 1, 1), compose) - eta)[
                    :, :, 0
                ].norm()
                for compose in (True, False)
            }
            assert errors[True] < 0.9 * errors[False], (seed, errors)


def test_inversion_then_sampling_reconstructs_the_input(tiny_model, sketch) -> None:
    """Null prompt, composition at every step, the clip = the reference: the
    result returns to z_0 up to DDIM's discretisation error, which shrinks with
    the number of steps (a random UNet is no denoiser, so few steps are coarse)."""

    def reconstruction_error(steps: int) -> float:
        params = AnimateParams(**{**SMALL, "frames": 2, "steps": steps, "guidance": 1.0, "tau_compose": steps})
        sampler = FlipSketchSampler(tiny_model, params)
        null = tiny_model.encode_prompts([""])
        z0 = encode_sketch(tiny_model, sketch, params)
        with flipsketch_attention(tiny_model.unet, sampler.control):
            reference = sampler.invert(z0, null)
            x = reference.latents[0].repeat(1, 1, 2, 1, 1)
            for i, t in enumerate(sampler.timesteps):
                sampler.control.records, sampler.control.spatial_frames = reference.records[i], max(1, 2 - i)
                eps = sampler.predict_noise(x, t, null.repeat(2, 1, 1), compose=True)
                x = ddim_move(x, eps, sampler.alphas[i], sampler.alphas[i + 1])
        return ((x[:, :, 0] - z0[:, :, 0]).norm() / z0.norm()).item()

    coarse, fine = reconstruction_error(25), reconstruction_error(300)
    assert fine < 0.05  # relative L2 error of the latent at 300 steps
    assert fine < coarse / 10


def test_alignment_lowers_its_loss_and_moves_only_frames_after_0(tiny_model, sketch) -> None:
    params = AnimateParams(**{**SMALL, "align_iters": 6, "align_lr": 0.02})
    sampler = FlipSketchSampler(tiny_model, params)
    null = tiny_model.encode_prompts([""])
    cond = tiny_model.encode_prompts([params.prompt])
    with flipsketch_attention(tiny_model.unet, sampler.control):
        reference = sampler.invert(encode_sketch(tiny_model, sketch, params), null)
        latents = torch.randn(1, 4, params.frames, 8, 8, generator=torch.Generator().manual_seed(0))
        aligned, losses = sampler.align_frames(
            latents, reference.latents[0], reference.eps[0], sampler.timesteps[0], cond
        )
    assert losses[-1] < 0.9 * losses[0]
    assert torch.equal(aligned[:, :, :1], reference.latents[0])  # frame 0 is x_t^r
    assert (aligned[:, :, 1:] - latents[:, :, 1:]).abs().amax(dim=(0, 1, 3, 4)).min() > 0.01
    assert all(p.grad is None and not p.requires_grad for p in tiny_model.unet.parameters())


def test_alignment_in_bf16_keeps_updates_below_bf16_resolution(tiny_model_dir, sketch) -> None:
    from flipsketch.models import load_model

    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    params = AnimateParams(**{**SMALL, "align_iters": 3, "align_lr": 1e-4})
    sampler = FlipSketchSampler(model, params)
    with flipsketch_attention(model.unet, sampler.control):
        reference = sampler.invert(encode_sketch(model, sketch, params), model.encode_prompts([""]))
        latents = 1 + torch.rand(1, 4, params.frames, 8, 8)  # in [1, 2): bf16 spacing is 2^-7
        cond = model.encode_prompts([params.prompt])
        aligned, _ = sampler.align_frames(latents, reference.latents[0], reference.eps[0], sampler.timesteps[0], cond)
    moved = aligned[:, :, 1:] - latents[:, :, 1:]
    assert aligned.dtype == torch.float32
    assert 0 < moved.abs().max() <= 3.5e-4  # three Adam steps of 1e-4
    assert (moved != 0).float().mean() > 0.9  # fp32 masters moved almost everywhere…
    unchanged_in_bf16 = aligned[:, :, 1:].bfloat16() == latents[:, :, 1:].bfloat16()
    assert unchanged_in_bf16.float().mean() > 0.9  # …where bf16 latents would have rounded the update away


def test_thresholds_apply_at_exactly_the_documented_step_indices(tiny_model, sketch, monkeypatch) -> None:
    params = AnimateParams(**{**SMALL, "frames": 8, "steps": 12, "tau_align": 3, "tau_compose": 5, "align_iters": 1})
    sampler = FlipSketchSampler(tiny_model, params)
    aligned_at, composed = [], []
    align, predict = sampler.align_frames, sampler.predict_noise

    def spy_align(latents, reference, target, t, cond):
        aligned_at.append(sampler.timesteps.index(t))
        return align(latents, reference, target, t, cond)

    def spy_predict(latents, t, embeddings, compose):
        composed.append((sampler.timesteps.index(t), compose, sampler.control.spatial_frames if compose else None))
        return predict(latents, t, embeddings, compose)

    monkeypatch.setattr(sampler, "align_frames", spy_align)
    monkeypatch.setattr(sampler, "predict_noise", spy_predict)
    sampler.generate(sketch)
    assert aligned_at == [0, 1, 2]  # i < τ1 = 3
    assert [i for i, on, _ in composed if on] == [0, 1, 2, 3, 4, 5]  # i <= τ2 = 5
    assert [n for _, on, n in composed if on] == [8, 7, 6, 5, 4, 3]  # N = max(1, F - i)
    assert len(composed) == 12


def test_seeds_are_reproducible_and_variants_equal_single_runs(tiny_model, sketch) -> None:
    single = [generate(tiny_model, sketch, seed=s) for s in (7, 8)]
    assert torch.equal(single[0], generate(tiny_model, sketch, seed=7))
    assert (single[0] - single[1]).abs().max() > 1e-2
    batched = generate(tiny_model, sketch, seed=7, variants=2)
    for k in range(2):
        assert torch.allclose(batched[k : k + 1], single[k], atol=1e-4, rtol=1e-4)


def test_progress_sees_every_step_once_and_ends_at_done(tiny_model, sketch) -> None:
    events = []
    params = AnimateParams(**{**SMALL, "tau_align": 2})
    animation = animate(tiny_model, sketch, params, progress=events.append)
    by_stage: dict[str, list[int]] = {}
    for event in events:
        by_stage.setdefault(event.stage, []).append(event.step)
    assert by_stage["invert"] == list(range(1, params.steps + 2))
    assert by_stage["denoise"] == list(range(1, params.steps + 1))
    assert by_stage["align"] == [1, 2] * 2
    assert events[-1].stage == "done" and events[-1].fraction == 1.0
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and max(fractions[:-1]) < 1.0
    assert len(animation.frames[0]) == params.frames


def test_cancel_is_honoured_inside_one_unet_forward(tiny_model, sketch, monkeypatch) -> None:
    from flipsketch.attention import FlipSketchAttnProcessor

    token = CancelToken()
    calls = {"n": 0, "after": 0}
    original = FlipSketchAttnProcessor.__call__

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        if token.is_set():
            calls["after"] += 1
        out = original(self, *args, **kwargs)
        if calls["n"] == 40:  # inside the second UNet forward (33 attn1 layers each)
            token.cancel()
        return out

    monkeypatch.setattr(FlipSketchAttnProcessor, "__call__", counting)
    with pytest.raises(Cancelled):
        animate(tiny_model, sketch, AnimateParams(**SMALL), cancel=token)
    assert calls["after"] == 1  # the very next attention layer stopped the job


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"prompt": "  "}, "prompt"),
        ({"frames": 1}, "frames"),
        ({"frames": 40}, "frames"),
        ({"motion": 1.5}, "motion"),
        ({"width": 100}, "width"),
        ({"variants": 0}, "variants"),
        ({"steps": 0}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"align_iters": 0}, "align_iters"),
    ],
)
def test_bad_parameters_name_the_field(override, field) -> None:
    with pytest.raises(InputError, match=f"'{field}"):
        AnimateParams(**{**SMALL, **override}).validate()


def test_more_frames_than_trained_warns() -> None:
    assert "trained on" in AnimateParams(**{**SMALL, "frames": 20}).validate()[0]
