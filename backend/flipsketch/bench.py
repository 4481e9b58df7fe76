"""`flipsketch bench`: what FlipSketch costs over plain text-to-video sampling.

All workloads run in one process on the same weights, so only ratios between
them are meaningful on a CPU; absolute times are worth quoting from a GPU.

  (a) plain text-to-video: diffusers' own TextToVideoSDPipeline, same
      frames/steps/guidance (the baseline)
  (b) FlipSketch without frame alignment (quality "draft")
  (c) FlipSketch with early-stopped frame alignment (the default, "standard";
      `--align-tol` sets its tolerance)
  (d) FlipSketch with the paper's fixed alignment schedule ("paper", align_tol
      0), to show what early stopping saves and costs; `--no-paper` skips it

With `--train`, the workloads are LoRA training steps (`flipsketch train-lora`)
on clips made from the example drawing, and LoRA inference:

  (e) one LoRA training step, batch 1 (the baseline)
  (f) (e) with gradient checkpointing
  (g) FlipSketch without alignment, no LoRA
  (h) (g) with a rank-16 LoRA applied

Model sizes: `tiny` (the test model), `mid` (a 22.6 M-parameter UNet, same block
layout) and `full` (the published configuration, random weights; GPU).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from flipsketch.models import SketchModel, load_model, pick_device, pick_dtype
from flipsketch.params import AnimateParams
from flipsketch.pipeline import animate, decode
from flipsketch.sketch import prepare_image
from flipsketch.tiny_model import create_tiny_model, published_config, tiny_configs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cat.png"


def mid_configs() -> dict[str, dict[str, Any]]:
    """Published block layout at 1/8 width: a UNet of 22.6 M parameters."""
    cfg = tiny_configs()
    cfg["unet"].update(block_out_channels=[40, 80, 160, 160], attention_head_dim=8, cross_attention_dim=256)
    cfg["text_encoder"].update(hidden_size=256, intermediate_size=1024, num_attention_heads=8, projection_dim=256)
    return cfg


def build_model(size: str, folder: Path, dtype: torch.dtype, device: str) -> SketchModel:
    """Write a random model of `size` in the published layout and load it
    through the normal loader (so the benchmark measures the real code path)."""
    if not (folder / "model_index.json").is_file():
        if size == "tiny":
            create_tiny_model(folder)
        else:
            full = published_config()
            configs = mid_configs() if size == "mid" else {k: full[k] for k in ("unet", "vae", "text_encoder")}
            create_tiny_model(folder, configs=configs)
    return load_model(str(folder), dtype=dtype, device=device)


class PeakMemory:
    """Peak memory of one workload: CUDA allocator peak, or the process's peak
    resident memory while it ran (model and warm-up allocations included)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil

        process = psutil.Process()

        def sample() -> None:  # the process's resident memory, sampled every 10 ms
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()


@dataclass
class Result:
    name: str
    seconds: float
    peak_bytes: int
    tflop: float | None = None
    extra: str = ""
    baseline: Result | None = None  # what `ratio` compares with; None = the first workload


def plain_text_to_video(model: SketchModel, params: AnimateParams) -> torch.Tensor:
    """Baseline (a): diffusers' TextToVideoSDPipeline on the same components;
    returns the decoded frames, (1, F, H, W, 3) in [0, 1]."""
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=model.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(params.seed)
    latents = pipe(
        params.prompt,
        height=params.height,
        width=params.width,
        num_frames=params.frames,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance,
        generator=generator,
        output_type="latent",
    ).frames
    return decode(model, latents)


def measure(name: str, model: SketchModel, work: Callable[[], Any], count_flops: bool) -> tuple[Result, Any]:
    with PeakMemory(model.device) as memory:
        started = time.perf_counter()
        out = work()
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        seconds = time.perf_counter() - started
    tflop = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            work()
        tflop = counter.get_total_flops() / 1e12
    return Result(name, seconds, memory.peak, tflop), out


def bench_model(args: argparse.Namespace) -> SketchModel:
    device = pick_device(args.device)
    return build_model(args.size, Path(args.model_dir) / args.size, pick_dtype(args.dtype, device), device)


def bench_params(args: argparse.Namespace, **overrides: Any) -> AnimateParams:
    """The animation every workload runs, at the size the command line asks for."""
    return AnimateParams(
        **{
            "prompt": "the cat turns its head and meows",
            "frames": args.frames,
            "steps": args.steps,
            "width": args.width,
            "height": args.height,
            "binarize": False,
            **overrides,
        }
    )


def run(args: argparse.Namespace) -> tuple[list[Result], SketchModel]:
    model = bench_model(args)
    base = bench_params(args)
    sketch: Image.Image = prepare_image(EXAMPLE, args.width, args.height)
    flops = args.count_flops

    def flipsketch(**kw: Any) -> Callable[[], Any]:
        return lambda: animate(model, sketch, replace(base, **kw))

    # Warm-up (kernels, allocator, caches) with short runs of both code paths.
    plain_text_to_video(model, replace(base, steps=2))
    flipsketch(steps=2, align_iters=1)()
    results = [measure("(a) plain text-to-video", model, lambda: plain_text_to_video(model, base), flops)[0]]
    b, _ = measure("(b) FlipSketch, no alignment (draft)", model, flipsketch(align=False), flops)
    c, early = measure(
        f"(c) early-stopped alignment {args.align_tol}", model, flipsketch(align=True, align_tol=args.align_tol), flops
    )
    results += [b, c]
    if not args.no_paper:
        d, full = measure("(d) paper-exact alignment", model, flipsketch(align=True, align_tol=0.0), flops)
        c.extra = early_stop_cost(early, full)
        results.append(d)
    return results, model


def early_stop_cost(early: Any, full: Any) -> str:
    """Alignment iterations run and mean final alignment loss: early-stopped vs paper-exact."""

    def final_loss(animation: Any) -> float:
        losses = animation.stats["align_losses"]
        return sum(step[-1] for step in losses) / len(losses)

    iters = sum(len(step) for step in early.stats["align_losses"])
    loss, paper = final_loss(early), final_loss(full)
    return (
        f"alignment iterations {iters} of {sum(len(s) for s in full.stats['align_losses'])}; "
        f"mean final loss {loss:.4g} vs {paper:.4g} ({100 * (loss / paper - 1):+.1f} %)"
    )


def training_clips(width: int, frames: int) -> list[Any]:
    """Two clips of the example drawing sliding sideways, prepared like user clips."""
    from flipsketch.clips import load_clips

    drawing = prepare_image(EXAMPLE, width, width)
    with tempfile.TemporaryDirectory(prefix="flipsketch-bench-") as data:
        for clip, direction in (("left", -1), ("right", 1)):
            folder = Path(data) / clip
            folder.mkdir()
            for i in range(frames):
                shifted = Image.new("L", drawing.size, 255)
                shifted.paste(drawing, (direction * 2 * i, 0))
                shifted.save(folder / f"frame_{i:04d}.png")
            (folder / "caption.txt").write_text(f"the cat slides to the {clip}")
        return load_clips(data, width, frames)


def run_training(args: argparse.Namespace) -> tuple[list[Result], SketchModel]:
    from flipsketch.lora import LoraRef
    from flipsketch.train import LoraTrainer, gradient_checkpointing
    from flipsketch.train_config import TrainConfig

    model = bench_model(args)
    config = TrainConfig(rank=16, learning_rate=1e-4, batch=1, resolution=args.width, frames=args.frames)
    trainer = LoraTrainer(model, training_clips(args.width, args.frames), config)
    steps = args.train_steps

    def train_steps() -> None:
        for _ in range(steps):
            trainer.train_step()

    # Checkpointing first: on a CPU the peak is the process's resident memory,
    # which does not shrink after the larger workload.
    with gradient_checkpointing(model.unet, True):
        trainer.train_step()  # warm-up
        f = measure("(f) (e) + gradient checkpointing", model, train_steps, args.count_flops)[0]
    trainer.train_step()
    e = measure(f"(e) LoRA training step x{steps}", model, train_steps, args.count_flops)[0]
    for result in (e, f):
        result.extra = f"{result.seconds / steps:.3f} s per step"
    with tempfile.TemporaryDirectory(prefix="flipsketch-bench-") as folder:
        adapter = Path(folder)
        trainer.save_adapter(adapter)
        model.unet.eval()
        sketch = prepare_image(EXAMPLE, args.width, args.height)
        base = bench_params(args, align=False)
        styled = replace(base, loras=[LoraRef(str(adapter))])
        animate(model, sketch, styled)  # warm-up, and the adapter is loaded once, as on a server
        g = measure("(g) FlipSketch, no alignment", model, lambda: animate(model, sketch, base), args.count_flops)[0]
        h = measure("(h) (g) + rank-16 LoRA", model, lambda: animate(model, sketch, styled), args.count_flops)[0]
    f.baseline, h.baseline = e, g
    return [e, f, g, h], model


def report(results: list[Result], args: argparse.Namespace, device_name: str, model: SketchModel) -> str:
    params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    lines = [
        f"device: {device_name}; model: {args.size} (UNet {params:.1f} M parameters, {model.dtype}); "
        f"{args.frames} frames, {args.width}x{args.height}, "
        f"{args.steps} steps, CFG 9",
        f"{'workload':40} {'seconds':>9} {'ratio':>7} {'peak MiB':>9} {'ratio':>7} {'TFLOP/s':>8}",
    ]
    for r in results:
        rate = f"{r.tflop / r.seconds:8.1f}" if r.tflop is not None else f"{'-':>8}"
        versus = r.baseline or results[0]
        time_ratio, memory_ratio = r.seconds / versus.seconds, r.peak_bytes / max(versus.peak_bytes, 1)
        lines.append(
            f"{r.name:40} {r.seconds:9.2f} {time_ratio:7.2f} {r.peak_bytes / 2**20:9.0f} {memory_ratio:7.2f} {rate}"
        )
        if r.extra:
            lines.append(f"{'':40} {r.extra}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    results, model = run_training(args) if args.train else run(args)
    device = pick_device(args.device)
    name = (
        torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(report(results, args, name, model))
    return 0
