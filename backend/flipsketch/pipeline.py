"""The FlipSketch sampler (Bandyopadhyay & Song, CVPR 2025) on diffusers parts.

`animate()` follows the paper's order: encode the sketch, DDIM-invert it,
start from [x_T^r, noise…], then for every DDIM step optionally align the
frames to the reference (i < τ1) and compose attention with the reference
(i ≤ τ2), and finally decode. Step indices i count from 0 at the noisiest step.

The reference trajectory x_t^r (which gives η and the recorded queries/keys)
has two constructions, chosen by `params.reference`:

* ``"inversion"`` (default, ours): one frame is inverted with the UNet
  evaluated at the *current* level, ε(x_t^r, t, ∅), the mirror of a DDIM
  sampling step, and the whole inversion trajectory is kept. Those
  evaluations are the reference passes, so they are computed once, on one
  frame. Only the top level x_T^r needs one extra single-frame pass.
* ``"released"`` (the authors' code): the sketch is repeated as a 5-frame
  static clip and inverted in the classic order, ε(x_{t−1}, t) then a step up,
  and x_T^r is the mean over those frames. While sampling, the reference is
  re-denoised from x_T^r with the null prompt as an F-copy video next to the
  generation; that pass provides η (its frame 0) and the recorded queries/keys.

The two differ in the math, not only in cost. Their video passes equal
single-frame passes to ~1e-6 while the UNet's temporal layers output zero (as
in a freshly initialised model, whose temporal convolutions start at zero) and
differ by tens of per cent on non-zero temporal weights, where the copies
interact. Independently, the released inversion order and re-denoising follow
a slightly different DDIM path, a discretisation difference that shrinks as
the number of steps grows. Which is better on the trained weights is what the
eval grid (`flipsketch eval --grid`) measures; ours costs one single-frame pass
per step, the released one five frames per inversion step plus an F-frame pass
per step up to max(τ1, τ2 + 1).

Unconditional and conditional branches (all variants) go through the UNet as
one batch; composition touches only the conditional samples. Latents are kept
in float32 (the "master" copy) and cast to the UNet's dtype per call, so
alignment updates smaller than bf16 resolution are not lost. The UNet output
is turned into a noise prediction ε according to the scheduler's
`prediction_type` (epsilon, v_prediction or sample).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from flipsketch.attention import CompositionControl, Mode, flipsketch_attention, frame0_logit_scale
from flipsketch.errors import NonFiniteError
from flipsketch.lora import applied_loras
from flipsketch.models import SketchModel
from flipsketch.params import AnimateParams
from flipsketch.progress import CancelToken, Progress, ProgressCallback


@dataclass
class Animation:
    """Generated frames per variant plus what it took to make them."""

    frames: list[list[Image.Image]]  # [variant][frame]
    params: AnimateParams
    stats: dict[str, Any] = field(default_factory=dict)
    # Variants best first, [{"seed", "score", "hidden"}], once scored (ranking.rank_variants).
    ranking: list[dict[str, Any]] | None = None
    score_method: str | None = None

    def seeds(self) -> list[int]:
        return [self.params.seed + k for k in range(self.params.variants)]

    def as_segment(self) -> Animation:
        """The clip as the continuation of another: its frame 0 re-creates the
        parent's last frame (the reference), so it is dropped at the join."""
        return Animation(
            [frames[1:] for frames in self.frames], self.params, self.stats, self.ranking, self.score_method
        )


RELEASED_INVERSION_FRAMES = 5  # the released code inverts the sketch as a 5-frame static clip


def ddim_move(x: torch.Tensor, eps: torch.Tensor, alpha_from: torch.Tensor, alpha_to: torch.Tensor) -> torch.Tensor:
    """Move a latent between noise levels along the DDIM (η = 0) path.

    Sampling moves down (alpha grows), inversion moves up with the same formula."""
    x0 = (x - (1 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
    return alpha_to.sqrt() * x0 + (1 - alpha_to).sqrt() * eps


def to_noise(output: torch.Tensor, latents: torch.Tensor, scheduler: Any, t: int) -> torch.Tensor:
    """The UNet's output as a noise prediction ε, for the scheduler's
    `prediction_type` (checked when the model loads, see models.check_scheduler):
    epsilon as is; v = √ᾱ·ε − √(1−ᾱ)·x_0 and sample = x_0 converted with x_t."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return output
    alpha = torch.as_tensor(scheduler.alphas_cumprod[t], dtype=torch.float32, device=output.device)
    if kind == "v_prediction":
        return alpha.sqrt() * output + (1 - alpha).sqrt() * latents
    return (latents - alpha.sqrt() * output) / (1 - alpha).sqrt()  # "sample"


def sampling_schedule(model: SketchModel, steps: int) -> tuple[list[int], torch.Tensor]:
    """DDIM timesteps (noisiest first) and the alpha-bar of every level, the
    last one being the clean end of the chain (`final_alpha_cumprod`)."""
    scheduler = model.scheduler
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = [scheduler.alphas_cumprod[t] for t in timesteps] + [scheduler.final_alpha_cumprod]
    return timesteps, torch.stack([torch.as_tensor(a, dtype=torch.float32) for a in alphas])


def encode_sketch(model: SketchModel, sketch: Image.Image, params: AnimateParams) -> torch.Tensor:
    """Sketch -> reference latent z_0 of shape (1, 4, 1, h, w).

    The VAE expects [-1, 1]; `released_input_range` feeds [0, 1] like the
    released code, for A/B comparisons only."""
    image = sketch.convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    if not params.released_input_range:
        pixels = pixels * 2 - 1
    with torch.no_grad():
        dist = model.vae.encode(pixels.to(model.device, model.vae.dtype)).latent_dist
    return (dist.mean.float() * model.vae.config.scaling_factor)[:, :, None]


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


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """NonFiniteError unless every value is finite: a NaN would decode to black
    frames that look like a result."""
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(what)


def postprocess(frame: np.ndarray, params: AnimateParams) -> Image.Image:
    """RGB float frame (H, W, 3) in [0, 1] -> grayscale line drawing at the output size.

    The grey frame is resized first (Lanczos) and Otsu-thresholded after, at
    the output size, as the released code does at 1024²: the lines come out
    strictly black/white with edges as smooth as the output grid allows."""
    import cv2

    image = Image.fromarray((frame.mean(axis=-1) * 255).round().astype(np.uint8), "L")
    if params.output_size and params.output_size != max(image.size):
        scale = params.output_size / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    if params.binarize:
        _, gray = cv2.threshold(np.asarray(image), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        image = Image.fromarray(gray, "L")
    return image


@dataclass
class Reference:
    """What DDIM inversion of the sketch yields, per sampling step index i
    (the "inversion" construction: all steps known before sampling starts)."""

    latents: list[torch.Tensor]  # x_t^r
    eps: list[torch.Tensor]  # ε(x_t^r, t, ∅): the reference-alone prediction η
    records: dict[int, dict[str, torch.Tensor]]  # attention records for steps i ≤ τ2

    def step(self, i: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        """(x_t^r (1, C, 1, h, w), η (1, C, 1, h, w), records or None) for step i."""
        return self.latents[i], self.eps[i], self.records.pop(i, None)


class ReleasedReference:
    """The released construction: the reference re-denoised from x_T^r with
    the null prompt as an F-copy video, one pass per step while alignment or
    composition still needs it; frame 0 of that pass is x_t^r and η."""

    def __init__(self, sampler: FlipSketchSampler, top: torch.Tensor, null: torch.Tensor) -> None:
        self.sampler = sampler
        self.null = null
        self.video = top.repeat(1, 1, sampler.params.frames, 1, 1)  # (1, C, F, h, w)
        self.passes = sampler.reference_passes

    def step(self, i: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        sampler, ctl = self.sampler, self.sampler.control
        x = self.video
        if i >= self.passes:
            return x[:, :, :1], torch.empty(0), None
        record = i <= sampler.compose_until
        ctl.mode, ctl.records = (Mode.RECORD if record else Mode.PLAIN), {}
        with torch.no_grad():
            eps = sampler.unet(x, sampler.timesteps[i], self.null)
        records = ctl.records if record else None
        ctl.mode, ctl.records = Mode.PLAIN, {}
        self.video = ddim_move(x, eps, sampler.alphas[i], sampler.alphas[i + 1])
        sampler.progress.advance("reference", i + 1, self.passes, cost=x.shape[2])
        return x[:, :, :1], eps[:, :, :1], records


class FlipSketchSampler:
    """One animation job: the model, its parameters, progress and cancel.

    `generate()` is the method in the paper's order; the other methods are
    its steps, public so that tests can exercise each against the paper."""

    def __init__(
        self,
        model: SketchModel,
        params: AnimateParams,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.notes = params.validate()
        frames, variants = params.frames, params.variants
        self.timesteps, self.alphas = sampling_schedule(model, params.steps)
        self.align_steps = min(params.tau_align, params.steps) if params.align else 0
        self.cfg = params.guidance != 1.0
        branches = 2 if self.cfg else 1
        released = params.reference == "released"
        composing = params.tau_compose >= 0 and (params.compose_spatial or params.compose_temporal)
        self.compose_until = min(params.tau_compose, params.steps - 1) if composing else -1  # last composed step
        # Steps at which the released construction runs its reference video pass.
        self.reference_passes = max(self.align_steps, self.compose_until + 1) if released else 0
        self.progress = Progress(
            progress,
            cancel,
            {
                "invert": params.steps * RELEASED_INVERSION_FRAMES if released else params.steps + 1,
                "reference": self.reference_passes * frames,
                "align": self.align_steps * params.align_iters * 3 * frames * variants,
                "denoise": params.steps * branches * frames * variants,
                "decode": frames * variants,
            },
        )
        self.control = CompositionControl(
            num_frames=frames,
            logit_scale=frame0_logit_scale(frames, params.lam),
            use_spatial=params.compose_spatial,
            use_temporal=params.compose_temporal,
            cancel=cancel,
        )
        self.unet_calls = 0
        self.stats: dict[str, Any] = {"notes": self.notes, "align_losses": []}

    def unet(self, latents: torch.Tensor, t: int, embeddings: torch.Tensor) -> torch.Tensor:
        """One UNet forward on fp32 latents (B, C, F, h, w); returns the fp32
        noise prediction ε, converted from the scheduler's `prediction_type`."""
        self.unet_calls += 1
        model = self.model
        out = model.unet(latents.to(model.dtype), t, encoder_hidden_states=embeddings, return_dict=False)[0]
        return to_noise(out.float(), latents, self.model.scheduler, t)

    def invert(self, z0: torch.Tensor, null: torch.Tensor) -> Reference:
        """DDIM inversion with the null prompt, recording the reference pass.

        The UNet is evaluated at the current level, ε(x_t^r, t, ∅): the mirror
        of a sampling step, and exactly the reference pass step i needs."""
        params, ctl, steps = self.params, self.control, self.params.steps
        keep_records = params.tau_compose >= 0 and (params.compose_spatial or params.compose_temporal)
        latents: list[torch.Tensor] = [torch.empty(0)] * steps
        eps_at: list[torch.Tensor] = [torch.empty(0)] * steps
        records: dict[int, dict[str, torch.Tensor]] = {}
        x = z0
        # Climb from the clean end (alphas[steps], timestep 0) to the top level i = 0.
        for i in range(steps, -1, -1):
            record = keep_records and i < steps and i <= params.tau_compose
            ctl.mode = Mode.RECORD if record else Mode.PLAIN
            ctl.records = {}
            with torch.no_grad():
                eps = self.unet(x, self.timesteps[i] if i < steps else 0, null)
            if record:
                records[i] = ctl.records
            if i < steps:
                latents[i], eps_at[i] = x, eps
            if i > 0:
                x = ddim_move(x, eps, self.alphas[i], self.alphas[i - 1])
            self.progress.advance("invert", steps + 1 - i, steps + 1, cost=1)
        ctl.mode, ctl.records = Mode.PLAIN, {}
        return Reference(latents, eps_at, records)

    def invert_released(self, z0: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        """The released code's inversion: z_0 repeated as a 5-frame static clip,
        classic order ε(x_{t−1}, t) then a step up to level t, averaged over
        the frames at the top. Returns x_T^r, (1, C, 1, h, w)."""
        steps = self.params.steps
        x = z0.repeat(1, 1, RELEASED_INVERSION_FRAMES, 1, 1)
        for i in range(steps - 1, -1, -1):
            with torch.no_grad():
                eps = self.unet(x, self.timesteps[i], null)
            x = ddim_move(x, eps, self.alphas[i + 1], self.alphas[i])
            self.progress.advance("invert", steps - i, steps, cost=RELEASED_INVERSION_FRAMES)
        return x.mean(dim=2, keepdim=True)

    def align_frames(
        self, latents: torch.Tensor, reference: torch.Tensor, target: torch.Tensor, t: int, cond: torch.Tensor
    ) -> tuple[torch.Tensor, list[float]]:
        """Iterative frame alignment: move frames 1..F−1 so that the joint
        model's frame-0 prediction for [x_t^r, f^{1..F−1}] matches the
        reference-alone prediction `target`.

        Frame 0 becomes x_t^r (as in the paper). Only an fp32 copy of frames
        1..F−1 has a gradient; the UNet was frozen when it was loaded."""
        params = self.params
        variants = latents.shape[0]
        cost = 3 * params.frames * variants  # forward + backward, in frame-passes
        fixed = reference.expand(variants, -1, -1, -1, -1)
        free = latents[:, :, 1:].detach().float().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([free], lr=params.align_lr)
        losses: list[float] = []
        with torch.enable_grad():
            for it in range(params.align_iters):
                pred0 = self.unet(torch.cat([fixed, free], dim=2), t, cond)[:, :, 0]
                # Sum of per-variant means: each variant gets the gradient it would get alone.
                loss = (pred0 - target[:, :, 0]).pow(2).mean(dim=(1, 2, 3)).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item() / variants)
                self.progress.advance("align", it + 1, params.align_iters, cost=cost)
                if params.align_tol > 0 and it > 0 and losses[-2] - losses[-1] < params.align_tol * losses[-2]:
                    self.progress.skip(cost * (params.align_iters - it - 1))
                    break
        return torch.cat([fixed, free.detach()], dim=2), losses

    def predict_noise(self, latents: torch.Tensor, t: int, embeddings: torch.Tensor, compose: bool) -> torch.Tensor:
        """Classifier-free guided noise; both branches of all variants in one
        forward, composition on the conditional half only."""
        ctl, variants = self.control, latents.shape[0]
        batch = torch.cat([latents, latents]) if self.cfg else latents
        ctl.cond = slice(variants, 2 * variants) if self.cfg else slice(0, variants)
        ctl.mode = Mode.COMPOSE if compose else Mode.PLAIN
        with torch.no_grad():
            eps = self.unet(batch, t, embeddings if self.cfg else embeddings[variants:])
        ctl.mode = Mode.PLAIN
        if not self.cfg:
            return eps
        uncond, cond = eps.chunk(2)
        return uncond + self.params.guidance * (cond - uncond)

    def generate(self, sketch: Image.Image) -> torch.Tensor:
        """The FlipSketch method; returns the final latents (V, C, F, h, w)."""
        model, params, ctl = self.model, self.params, self.control
        started = time.perf_counter()
        variants, frames = params.variants, params.frames
        with flipsketch_attention(model.unet, ctl):
            self.progress.advance("encode", 1, 1, cost=0)
            z0 = encode_sketch(model, sketch, params)
            embeddings = model.encode_prompts([params.negative_prompt] * variants + [params.prompt] * variants)
            null = model.encode_prompts([""])
            reference: Reference | ReleasedReference
            if params.reference == "released":
                top = self.invert_released(z0, null)
                reference = ReleasedReference(self, top, null)
            else:
                reference = self.invert(z0, null)
                top = reference.latents[0]
            self.stats["invert_s"] = time.perf_counter() - started
            latents = initial_latents(top, params)
            for i, t in enumerate(self.timesteps):
                x_ref, eta, records = reference.step(i)
                if i < self.align_steps:
                    latents, losses = self.align_frames(latents, x_ref, eta, t, embeddings[variants:])
                    self.stats["align_losses"].append(losses)
                compose = records is not None
                if compose:
                    ctl.records = records
                    ctl.spatial_frames = max(1, frames - i)
                eps = self.predict_noise(latents, t, embeddings, compose)
                latents = ddim_move(latents, eps, self.alphas[i], self.alphas[i + 1])
                self.progress.advance("denoise", i + 1, params.steps, cost=(2 if self.cfg else 1) * frames * variants)
            ctl.records = {}
        self.stats["unet_calls"] = self.unet_calls
        return latents


def animate(
    model: SketchModel,
    sketch: Image.Image,
    params: AnimateParams,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Animation:
    """Animate `sketch` (a prepared line drawing) as described by `params`,
    with the job's LoRAs applied for exactly this call."""
    sampler = FlipSketchSampler(model, params, progress, cancel)  # notes (e.g. >16 frames) go to stats
    started = time.perf_counter()
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    with applied_loras(model, params.loras) as loras:
        latents = sampler.generate(sketch)
    sampler.stats["loras"] = loras
    check_finite(latents, "latents")
    decoded = decode(model, latents)
    check_finite(decoded, "frames")
    images = decoded.numpy()
    frames = [[postprocess(images[v, f], params) for f in range(params.frames)] for v in range(params.variants)]
    sampler.progress.advance("decode", 1, 1, cost=params.frames * params.variants)
    sampler.stats.update(
        total_s=time.perf_counter() - started,
        peak_gpu_bytes=torch.cuda.max_memory_allocated(model.device) if model.device.type == "cuda" else None,
    )
    sampler.progress.done()
    return Animation(frames, params, sampler.stats)
