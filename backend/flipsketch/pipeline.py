"""The FlipSketch sampler (Bandyopadhyay & Song, CVPR 2025) on diffusers parts.

`animate()` follows the paper's order: encode the sketch, DDIM-invert it,
start from [x_T^r, noise…], then for every DDIM step optionally align the
frames to the reference (i < τ1) and compose attention with the reference
(i ≤ τ2), and finally decode. Step indices i count from 0 at the noisiest step.

Two choices make it cheaper than the released code without changing the math:

* Inversion evaluates the UNet at the *current* level, ε(x_t^r, t, ∅), exactly
  the mirror of a DDIM sampling step. Those evaluations are the reference
  passes the sampler needs later (η for alignment, the recorded queries/keys
  for composition), so they are computed once, during inversion, on one frame.
  Only the top level x_T^r needs one extra single-frame pass.
* Unconditional and conditional branches (all variants) go through the UNet as
  one batch; composition touches only the conditional samples.

Latents are kept in float32 (the "master" copy) and cast to the UNet's dtype
per call, so alignment updates smaller than bf16 resolution are not lost.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from flipsketch.attention import CompositionControl, Mode, flipsketch_attention, frame0_logit_scale
from flipsketch.errors import InputError
from flipsketch.models import SketchModel
from flipsketch.progress import CancelToken, Progress, ProgressCallback

TRAINED_FRAMES = 16
MAX_FRAMES = 32


@dataclass
class AnimateParams:
    """Everything that decides an animation; defaults are the paper's."""

    prompt: str
    negative_prompt: str = ""
    frames: int = 10
    steps: int = 25
    guidance: float = 9.0
    motion: float = 0.5  # m in [0, 1]; λ = 1 − m
    seed: int = 0
    variants: int = 1  # seeds seed, seed+1, … in one batch
    tau_align: int = 10  # alignment at step indices i < tau_align
    tau_compose: int = 15  # composition at step indices i <= tau_compose
    align: bool = True
    align_iters: int = 10
    align_lr: float = 1e-3
    align_tol: float = 0.0  # > 0: stop a step's alignment when the loss improves by less (relative)
    compose_spatial: bool = True
    compose_temporal: bool = True
    width: int = 256
    height: int = 256
    released_input_range: bool = False  # feed the VAE [0,1] like the released code (A/B only)
    binarize: bool = True  # Otsu threshold the frames back to clean lines
    output_size: int | None = None  # longer side of the saved frames; None = generation size

    @property
    def lam(self) -> float:
        return 1.0 - self.motion

    def validate(self) -> list[str]:
        """Raise InputError naming the field and the fix; return warnings."""

        def bad(name: str, problem: str, fix: str) -> InputError:
            return InputError(f"Parameter '{name}' {problem}.", fix)

        if not self.prompt or not self.prompt.strip():
            raise bad("prompt", "is empty", "Describe the motion, e.g. 'the cat turns its head'.")
        if not 2 <= self.frames <= MAX_FRAMES:
            raise bad("frames", f"is {self.frames}", f"Use 2 to {MAX_FRAMES} frames.")
        if not 1 <= self.steps <= 1000:
            raise bad("steps", f"is {self.steps}", "Use 1 to 1000 DDIM steps (25 is the default).")
        if not 0 <= self.motion <= 1:
            raise bad("motion", f"is {self.motion}", "Use a motion strength between 0 and 1.")
        if self.guidance < 0:
            raise bad("guidance", f"is {self.guidance}", "Use a guidance scale >= 0 (9 is the default).")
        if not 1 <= self.variants <= 16:
            raise bad("variants", f"is {self.variants}", "Use 1 to 16 variants per job.")
        if not 0 <= self.seed < 2**63:
            raise bad("seed", f"is {self.seed}", "Use a seed between 0 and 2^63-1.")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % 8 or not 64 <= value <= 1024:
                raise bad(name, f"is {value}", "Use a multiple of 8 between 64 and 1024 (256 is the trained size).")
        if self.tau_align < 0 or self.tau_compose < -1:
            raise bad("tau", "is negative", "Use τ1 >= 0 and τ2 >= -1 (−1 turns composition off).")
        if self.align and (self.align_iters < 1 or self.align_lr <= 0):
            raise bad("align_iters/align_lr", "must be positive", "Use at least 1 iteration and a positive rate.")
        if self.output_size is not None and not 16 <= self.output_size <= 4096:
            raise bad("output_size", f"is {self.output_size}", "Use 16 to 4096 pixels.")
        notes = []
        if self.frames > TRAINED_FRAMES:
            notes.append(f"{self.frames} frames is more than the {TRAINED_FRAMES} the model was trained on.")
        return notes


@dataclass
class Animation:
    """Generated frames per variant plus what it took to make them."""

    frames: list[list[Image.Image]]  # [variant][frame]
    params: AnimateParams
    stats: dict[str, Any] = field(default_factory=dict)

    def seeds(self) -> list[int]:
        return [self.params.seed + k for k in range(self.params.variants)]


def ddim_move(x: torch.Tensor, eps: torch.Tensor, alpha_from: torch.Tensor, alpha_to: torch.Tensor) -> torch.Tensor:
    """Move a latent between noise levels along the DDIM (η = 0) path.

    Sampling moves down (alpha grows), inversion moves up with the same formula."""
    x0 = (x - (1 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
    return alpha_to.sqrt() * x0 + (1 - alpha_to).sqrt() * eps


@dataclass
class _Run:
    """Per-call state shared by the helper steps of `animate`."""

    model: SketchModel
    params: AnimateParams
    control: CompositionControl
    progress: Progress
    unet_calls: int = 0

    def unet(self, latents: torch.Tensor, t: int, embeddings: torch.Tensor) -> torch.Tensor:
        """One UNet forward on fp32 latents (B, C, F, h, w); returns fp32 noise."""
        self.unet_calls += 1
        model = self.model
        out = model.unet(latents.to(model.dtype), t, encoder_hidden_states=embeddings, return_dict=False)[0]
        return out.float()


def sampling_schedule(model: SketchModel, steps: int) -> tuple[list[int], torch.Tensor]:
    """DDIM timesteps (noisiest first) and the alpha-bar of every level, the
    last one being the clean end of the chain (`final_alpha_cumprod`)."""
    scheduler = model.scheduler
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = [scheduler.alphas_cumprod[t] for t in timesteps] + [scheduler.final_alpha_cumprod]
    return timesteps, torch.stack([torch.as_tensor(a, dtype=torch.float32) for a in alphas])


def encode_sketch(model: SketchModel, sketch: Image.Image, params: AnimateParams) -> torch.Tensor:
    """Sketch -> reference latent z_0 of shape (1, 4, 1, h, w)."""
    image = sketch.convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    if not params.released_input_range:
        pixels = pixels * 2 - 1
    with torch.no_grad():
        dist = model.vae.encode(pixels.to(model.device, model.vae.dtype)).latent_dist
    return (dist.mean.float() * model.vae.config.scaling_factor)[:, :, None]


def invert(run: _Run, z0: torch.Tensor, timesteps: list[int], alphas: torch.Tensor, null: torch.Tensor):
    """DDIM inversion with the null prompt.

    Returns (trajectory, eps, records): x_t^r and ε(x_t^r, t, ∅) for every
    sampling step index i, and the attention records of steps i ≤ τ2."""
    params, ctl = run.params, run.control
    steps = len(timesteps)
    keep_records = params.tau_compose >= 0 and (params.compose_spatial or params.compose_temporal)
    trajectory: list[torch.Tensor] = [torch.empty(0)] * steps
    eps_at: list[torch.Tensor] = [torch.empty(0)] * steps
    records: dict[int, dict[str, torch.Tensor]] = {}
    x = z0
    # Climb from the clean end (alphas[-1], timestep 0) to the top level (index 0).
    for i in range(steps, -1, -1):
        t = timesteps[i] if i < steps else 0
        if i < steps:
            trajectory[i] = x
        record = keep_records and i <= params.tau_compose
        ctl.mode, ctl.records = (Mode.RECORD, {}) if record else (Mode.PLAIN, ctl.records)
        with torch.no_grad():
            eps = run.unet(x, t, null)
        if record:
            records[i] = ctl.records
        if i < steps:
            eps_at[i] = eps
        if i > 0:
            x = ddim_move(x, eps, alphas[i], alphas[i - 1])
        run.progress.advance("invert", steps + 1 - i, steps + 1, cost=1)
    ctl.mode = Mode.PLAIN
    return trajectory, eps_at, records


def initial_latents(reference: torch.Tensor, params: AnimateParams) -> torch.Tensor:
    """f_T = [x_T^r, ε_2 … ε_F] per variant; noise drawn on the CPU from the
    variant's own seed, so batched variants equal single runs on any device."""
    _, c, _, h, w = reference.shape
    batch = []
    for seed in range(params.seed, params.seed + params.variants):
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn((1, c, params.frames - 1, h, w), generator=generator, dtype=torch.float32)
        batch.append(torch.cat([reference.cpu(), noise], dim=2))
    return torch.cat(batch).to(reference.device)


def align_frames(
    run: _Run, latents: torch.Tensor, reference: torch.Tensor, target: torch.Tensor, t: int, cond: torch.Tensor
) -> tuple[torch.Tensor, list[float]]:
    """Iterative frame alignment: move frames 1..F−1 so that the joint model's
    frame-0 prediction for [x_t^r, f^{1..F−1}] matches the reference alone.

    Frame 0 is set to x_t^r (as in the paper). Only the fp32 copy of frames
    1..F−1 is a leaf with a gradient; the UNet is frozen at load time."""
    params = run.params
    variants = latents.shape[0]
    fixed = reference.expand(variants, -1, -1, -1, -1)
    free = latents[:, :, 1:].detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([free], lr=params.align_lr)
    losses: list[float] = []
    for it in range(params.align_iters):
        joint = torch.cat([fixed, free], dim=2)
        pred0 = run.unet(joint, t, cond)[:, :, 0]
        # Sum of per-variant means: each variant's gradient is what it would be alone.
        loss = (pred0 - target[:, :, 0]).pow(2).mean(dim=(1, 2, 3)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item() / variants)
        run.progress.advance("align", it + 1, params.align_iters, cost=3 * params.frames * variants)
        if params.align_tol > 0 and it > 0 and losses[-2] - losses[-1] < params.align_tol * losses[-2]:
            run.progress.skip(3 * params.frames * variants * (params.align_iters - it - 1))
            break
    return torch.cat([fixed, free.detach()], dim=2), losses


def predict_noise(run: _Run, latents: torch.Tensor, t: int, embeddings: torch.Tensor, compose: bool) -> torch.Tensor:
    """Classifier-free guided noise; both branches of all variants in one
    forward, composition on the conditional half only."""
    params, ctl = run.params, run.control
    variants = latents.shape[0]
    guided = params.guidance != 1.0
    batch = torch.cat([latents, latents]) if guided else latents
    ctl.cond = slice(variants, 2 * variants) if guided else slice(0, variants)
    ctl.mode = Mode.COMPOSE if compose else Mode.PLAIN
    with torch.no_grad():
        eps = run.unet(batch, t, embeddings if guided else embeddings[variants:])
    ctl.mode = Mode.PLAIN
    if not guided:
        return eps
    uncond, cond = eps.chunk(2)
    return uncond + params.guidance * (cond - uncond)


def decode(model: SketchModel, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Latents (V, C, F, h, w) -> images (V, F, H, W, 3) in [0, 1], decoded in
    batches of frames to bound VAE memory."""
    variants, c, frames, h, w = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(variants * frames, c, h, w) / model.vae.config.scaling_factor
    images = []
    with torch.no_grad():
        for part in flat.split(chunk):
            images.append(model.vae.decode(part.to(model.vae.dtype), return_dict=False)[0].float().cpu())
    out = (torch.cat(images) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    return out.reshape(variants, frames, *out.shape[1:])


def postprocess(frame: np.ndarray, params: AnimateParams) -> Image.Image:
    """RGB float frame -> clean grayscale line drawing at the output size."""
    import cv2

    gray = (frame.mean(axis=-1) * 255).round().astype(np.uint8)
    if params.binarize:
        _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    image = Image.fromarray(gray, "L")
    if params.output_size and params.output_size != max(image.size):
        scale = params.output_size / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def animate(
    model: SketchModel,
    sketch: Image.Image,
    params: AnimateParams,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Animation:
    """Animate `sketch` (a prepared line drawing) as described by `params`."""
    notes = params.validate()
    for note in notes:
        warnings.warn(note, stacklevel=2)
    timesteps, alphas = sampling_schedule(model, params.steps)
    align_steps = min(params.tau_align, params.steps) if params.align else 0
    variants, frames = params.variants, params.frames
    cfg = 2 if params.guidance != 1.0 else 1
    tracker = Progress(
        progress,
        cancel,
        {
            "invert": params.steps + 1,
            "align": align_steps * params.align_iters * 3 * frames * variants,
            "denoise": params.steps * cfg * frames * variants,
            "decode": frames * variants,
        },
    )
    control = CompositionControl(
        num_frames=frames,
        logit_scale=frame0_logit_scale(frames, params.lam),
        use_spatial=params.compose_spatial,
        use_temporal=params.compose_temporal,
        cancel=cancel,
    )
    run = _Run(model, params, control, tracker)
    stats: dict[str, Any] = {"notes": notes, "align_losses": []}
    started = time.perf_counter()
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    with flipsketch_attention(model.unet, control):
        tracker.advance("encode", 1, 1, cost=0)
        z0 = encode_sketch(model, sketch, params)
        embeddings = model.encode_prompts([params.negative_prompt] * variants + [params.prompt] * variants)
        null = model.encode_prompts([""])
        trajectory, ref_eps, records = invert(run, z0, timesteps, alphas, null)
        stats["invert_s"] = time.perf_counter() - started
        latents = initial_latents(trajectory[0], params)
        cond = embeddings[variants:]
        for i, t in enumerate(timesteps):
            if i < align_steps:
                with torch.enable_grad():
                    latents, losses = align_frames(run, latents, trajectory[i], ref_eps[i], t, cond)
                stats["align_losses"].append(losses)
            compose = i in records
            if compose:
                control.records = records.pop(i)
                control.spatial_frames = max(1, frames - i)
            eps = predict_noise(run, latents, t, embeddings, compose)
            latents = ddim_move(latents, eps, alphas[i], alphas[i + 1])
            tracker.advance("denoise", i + 1, params.steps, cost=cfg * frames * variants)
        control.records = {}
        images = decode(model, latents).numpy()
    result = [[postprocess(images[v, f], params) for f in range(frames)] for v in range(variants)]
    tracker.advance("decode", 1, 1, cost=frames * variants)
    stats.update(
        total_s=time.perf_counter() - started,
        unet_calls=run.unet_calls,
        peak_gpu_bytes=torch.cuda.max_memory_allocated(model.device) if model.device.type == "cuda" else None,
    )
    tracker.done()
    return Animation(result, params, stats)


def params_dict(params: AnimateParams) -> dict[str, Any]:
    return {**asdict(params), "lambda": params.lam}
