"""`flipsketch train-lora`: a sketch-style LoRA from your own animations.

The paper's first ingredient is a LoRA that teaches a photo-trained video
model to draw; this trains one more on a user's clips, on top of the published
sketch checkpoint (or any base in the same layout). It is the standard
text-to-video denoising objective with peft LoRA layers on the UNet's
attention projections (spatial and temporal, self and cross) and nothing else
trainable.

* Clips (sequences of drawings, see clips.py) are VAE-encoded once at the
  start; each step samples `batch` windows of `frames` consecutive drawings,
  a timestep and noise from one seeded CPU
  generator, so a run is reproducible and a resumed run continues exactly:
  checkpoints hold the adapter, the optimizer and the generator state.
* On a GPU the base model runs in bf16 while the adapter and its optimizer
  stay in float32 (mixed precision without a loss scaler); jobs that load the
  adapter keep it in float32 too, so they see the trained weights exactly.
* Gradient checkpointing recomputes each transformer/resnet block in the
  backward pass (diffusers' 3D UNet has no switch for it).
* Every checkpoint folder is itself a usable LoRA folder, and the final
  adapter, `run.json` and a validation animation are written into `--out`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flipsketch.clips import Clip, load_clips
from flipsketch.errors import FlipSketchError, InputError, NonFiniteError
from flipsketch.jsonio import write_json
from flipsketch.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraRef, inject, lora_cache, use_only
from flipsketch.models import SketchModel
from flipsketch.train_config import CHECKPOINTS, TRAINER_STATE, VALIDATION, TrainConfig, checkpoints, prepare_out

ADAPTER_NAME = "trained"  # not "train": adapter names become ModuleDict keys
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
# A checkpoint can only be resumed by a run that builds the same adapter on the same samples.
RESUME_KEYS = ("rank", "alpha", "resolution", "frames", "batch", "keep_holds")


def encode_frames(model: SketchModel, frames: np.ndarray, chunk: int = 16) -> torch.Tensor:
    """uint8 drawings (N, H, W) -> latents (N, C, h, w) in float32, like `encode_sketch`."""
    latents = []
    with torch.no_grad():
        for part in torch.from_numpy(frames).split(chunk):
            pixels = (part.float() / 127.5 - 1)[:, None].expand(-1, 3, -1, -1)
            dist = model.vae.encode(pixels.to(model.device, model.vae.dtype)).latent_dist
            latents.append(dist.mean.float() * model.vae.config.scaling_factor)
    return torch.cat(latents)


@contextmanager
def gradient_checkpointing(unet: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Recompute every resnet, temporal conv and transformer block in the
    backward pass instead of storing its activations."""
    if not enabled:
        yield
        return
    from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
    from torch.utils.checkpoint import checkpoint

    kinds = (ResnetBlock2D, TemporalConvLayer, Transformer2DModel, TransformerTemporalModel)
    wrapped = [m for m in unet.modules() if isinstance(m, kinds)]

    def recomputed(forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)

        return run

    for module in wrapped:
        module.forward = recomputed(module.forward)
    try:
        yield
    finally:
        for module in wrapped:
            del module.forward  # the class's forward again


class LoraTrainer:
    """The adapter, its optimizer and the sample stream of one training run."""

    def __init__(self, model: SketchModel, clips: list[Clip], config: TrainConfig) -> None:
        from peft import LoraConfig

        self.model, self.clips, self.config = model, clips, config
        unet = model.unet
        if ADAPTER_NAME in getattr(unet, "peft_config", {}):  # a model reused for another run
            lora_cache(model).drop(ADAPTER_NAME)
        self.lora_config = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha or config.rank,  # pyright: ignore[reportArgumentType]  peft annotates int; a float scales alike
            target_modules=TARGET_MODULES,
            init_lora_weights="gaussian",
            base_model_name_or_path=model.source.name,
        )
        with torch.random.fork_rng(devices=[]):  # seeded initial A matrices, global RNG untouched
            torch.manual_seed(config.seed)
            inject(unet, self.lora_config, ADAPTER_NAME)  # float32 adapter, also on a bf16 base
        use_only(unet, [ADAPTER_NAME], trainable=True)
        self.named_params = {n: p for n, p in unet.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.named_params.values(), lr=config.learning_rate)
        self.generator = torch.Generator("cpu").manual_seed(config.seed)
        self.latents = [encode_frames(model, clip.frames) for clip in clips]  # (F, C, h, w) each
        captions = sorted({clip.caption for clip in clips} | {""})
        self.embeddings = dict(zip(captions, model.encode_prompts(captions), strict=True))
        self.step = 0
        self.losses: list[float] = []
        self.step_seconds: list[float] = []

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clean latents (B, C, F, h, w), noise, timesteps, text embeddings)."""
        cfg, gen = self.config, self.generator
        picks = torch.randint(len(self.clips), (cfg.batch,), generator=gen).tolist()
        windows, texts = [], []
        for k in picks:
            start = int(torch.randint(len(self.latents[k]) - cfg.frames + 1, (1,), generator=gen))
            windows.append(self.latents[k][start : start + cfg.frames].transpose(0, 1))
            dropped = float(torch.rand((), generator=gen)) < cfg.caption_dropout
            texts.append(self.embeddings["" if dropped else self.clips[k].caption])
        clean = torch.stack(windows)
        noise = torch.randn(clean.shape, generator=gen).to(clean.device)
        steps = self.model.scheduler.config.num_train_timesteps
        timesteps = torch.randint(steps, (cfg.batch,), generator=gen).to(clean.device)
        return clean, noise, timesteps, torch.stack(texts)

    def loss(self) -> torch.Tensor:
        scheduler, unet = self.model.scheduler, self.model.unet
        clean, noise, timesteps, texts = self.sample()
        noisy = scheduler.add_noise(clean, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(clean, noise, timesteps)
        else:
            target = noise
        pred = unet(noisy.to(unet.dtype), timesteps, encoder_hidden_states=texts, return_dict=False)[0]
        return torch.nn.functional.mse_loss(pred.float(), target)

    def train_step(self) -> float:
        """One optimizer step on the adapter only; returns the loss."""
        started = time.perf_counter()
        self.model.unet.train()
        loss = self.loss()
        if not torch.isfinite(loss):  # before the step: the adapter and checkpoints stay finite
            raise NonFiniteError(
                f"(training loss {loss.item()} at step {self.step + 1}); a learning rate too high does it too"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.named_params.values(), 1.0)
        self.optimizer.step()
        self.step += 1
        self.losses.append(loss.item())
        self.step_seconds.append(time.perf_counter() - started)
        return self.losses[-1]

    def save_adapter(self, folder: Path) -> None:
        """peft's adapter layout: loadable by jobs, by peft and by diffusers users."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        state = get_peft_model_state_dict(self.model.unet, adapter_name=ADAPTER_NAME, save_embedding_layers=False)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / ADAPTER_WEIGHTS))
        self.lora_config.save_pretrained(str(folder))

    def save_checkpoint(self, root: Path) -> Path:
        from flipsketch.outputs import atomic_folder

        target = root / CHECKPOINTS / f"step-{self.step:06d}"
        with atomic_folder(target, overwrite=True) as partial:
            self.save_adapter(partial)
            state = {
                "step": self.step,
                "losses": self.losses,
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "config": asdict(self.config),
            }
            torch.save(state, partial / TRAINER_STATE)
        for old in checkpoints(root)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def resume(self, folder: Path) -> None:
        """Continue from a checkpoint: same adapter, optimizer and sample stream."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)
        saved, current = state["config"], asdict(self.config)
        changed = [k for k in RESUME_KEYS if saved.get(k) != current[k]]
        if changed:
            was = ", ".join(f"{k} {saved.get(k)} (now {current[k]})" for k in changed)
            raise InputError(
                f"Checkpoint '{folder}' was trained with {was}.",
                "Resume with the same settings, or start a new run with --overwrite or another --out.",
            )
        set_peft_model_state_dict(self.model.unet, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name=ADAPTER_NAME)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step, self.losses = state["step"], list(state["losses"])


def _save_final(trainer: LoraTrainer, out: Path) -> None:
    """Adapter files land by rename: a reader never sees a half-written one."""
    from flipsketch.outputs import atomic_folder

    staging = out / ".adapter"
    with atomic_folder(staging, overwrite=True) as partial:
        trainer.save_adapter(partial)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)


def validate_adapter(trainer: LoraTrainer, out: Path) -> dict[str, Any]:
    """Animate the first clip's first frame with its caption and the trained
    adapter, through the same LoRA path a job takes (seeded, so comparable
    between runs)."""
    from PIL import Image

    from flipsketch.outputs import write_animation
    from flipsketch.params import AnimateParams
    from flipsketch.pipeline import animate

    cfg, clip = trainer.config, trainer.clips[0]
    params = AnimateParams(
        prompt=clip.caption,
        frames=cfg.frames,
        steps=cfg.validation_steps,
        seed=cfg.seed,
        width=cfg.resolution,
        height=cfg.resolution,
        loras=[LoraRef(str(out))],
    )
    sketch = Image.fromarray(clip.frames[0], "L")
    animation = animate(trainer.model, sketch, params)
    write_animation(animation, trainer.model, out / VALIDATION, sketch, fps=10, overwrite=True)
    return {"folder": VALIDATION, "prompt": clip.caption, "seed": cfg.seed, "steps": cfg.validation_steps}


@dataclass
class TrainResult:
    out: Path
    trainer: LoraTrainer
    record: dict[str, Any]


def train_lora(
    data: str | Path,
    out: str | Path,
    model: SketchModel,
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    clips: list[Clip] | None = None,
) -> TrainResult:
    """Train, checkpoint, save the adapter into `out`, validate, write run.json.

    `clips` are the prepared clips of `data` when the caller loaded them
    already (the CLI does, to report bad data before loading the model)."""
    from flipsketch.outputs import library_versions, peak_rss_bytes

    config.validate()
    out = Path(out)
    if clips is None:
        clips = load_clips(data, config.resolution, config.frames, config.keep_holds)  # errors before GPU work
    prepare_out(out, resume, overwrite)
    started = time.perf_counter()
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    trainer = LoraTrainer(model, clips, config)
    resumed_from = checkpoints(out)[-1] if resume and checkpoints(out) else None
    try:
        if resumed_from:
            trainer.resume(resumed_from)
        with gradient_checkpointing(model.unet, config.gradient_checkpointing):
            while trainer.step < config.steps:
                loss = trainer.train_step()
                if on_step:
                    on_step(trainer.step, loss)
                if trainer.step % config.checkpoint_every == 0 or trainer.step == config.steps:
                    trainer.save_checkpoint(out)
        _save_final(trainer, out)
        lora_cache(model).adopt(out, ADAPTER_NAME)  # jobs naming `out` use the adapter as trained
    except torch.OutOfMemoryError:
        raise FlipSketchError(
            f"The {model.device.type.upper()} ran out of memory at step {trainer.step + 1}.",
            "Pass --gradient-checkpointing, or lower --batch, --frames or --resolution; "
            "--resume continues from the last checkpoint.",
        ) from None
    finally:  # a warm model (server) goes back to serving jobs: no adapter active, nothing trainable
        model.unet.eval()
        lora_cache(model).deactivate()
    timed = trainer.step_seconds[1:] or trainer.step_seconds
    record: dict[str, Any] = {
        "kind": "flipsketch.lora",
        "base_model": asdict(model.source),
        "base_is_tiny_random": model.is_tiny_random,
        "data": {
            "folder": str(Path(data).resolve()),
            "clips": [
                {"name": c.name, "caption": c.caption, "drawings": len(c.frames), "holds_dropped": c.holds}
                for c in clips
            ],
        },
        "config": asdict(config),
        "target_modules": TARGET_MODULES,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "steps_done": trainer.step,
        "losses": trainer.losses,
        "step_s_mean": float(np.mean(timed)) if timed else None,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(model.device) if model.device.type == "cuda" else None,
        "peak_rss_bytes": peak_rss_bytes(),
        "versions": library_versions(),
    }
    if config.validation_steps:
        record["validation"] = validate_adapter(trainer, out)
    record["total_s"] = time.perf_counter() - started
    write_json(out / "run.json", record)
    return TrainResult(out, trainer, record)
