"""The `flipsketch` command line.

Sub-commands import their heavy modules only when run, so `--help` and
`doctor` answer quickly. Every FlipSketchError becomes a two-line message and
exit code 2; nothing a user can fix ends in a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from flipsketch import __version__
from flipsketch.errors import FlipSketchError


def _doctor(args: argparse.Namespace) -> int:
    from flipsketch.doctor import report, run_checks

    findings = run_checks()
    print(report(findings))
    return 1 if any(f.blocking for f in findings) else 0


def _create_tiny(args: argparse.Namespace) -> int:
    from flipsketch.tiny_model import TINY_NOTICE, create_tiny_model

    folder = create_tiny_model(args.dir, seed=args.seed)
    print(f"Tiny random model written to {folder}\n{TINY_NOTICE}")
    return 0


# CLI switches that turn a parameter off (or on), and the parameter they set.
_SWITCHES = {
    "no_align": ("align", False),
    "no_compose_spatial": ("compose_spatial", False),
    "no_compose_temporal": ("compose_temporal", False),
    "no_binarize": ("binarize", False),
    "released_input_range": ("released_input_range", True),
}


def _given_params(args: argparse.Namespace) -> dict:
    """Only the parameters the user typed (options default to None), so that
    `extend` can fall back to the parent clip's values and `animate` to the paper's."""
    from dataclasses import fields

    from flipsketch.params import AnimateParams

    given = {f.name: getattr(args, f.name) for f in fields(AnimateParams) if getattr(args, f.name, None) is not None}
    given.update(value for switch, value in _SWITCHES.items() if getattr(args, switch))
    if "loras" in given:
        given["loras"] = [_lora_arg(text) for text in given["loras"]]
    return given


def _lora_arg(text: str) -> dict:
    """`FOLDER` or `FOLDER=WEIGHT` -> {"path", "weight"}."""
    folder, _, weight = text.rpartition("=")
    try:
        return {"path": folder, "weight": float(weight)} if folder else {"path": text, "weight": 1.0}
    except ValueError:
        return {"path": text, "weight": 1.0}  # an '=' that is part of the folder name


def _generate(args: argparse.Namespace, params, sketch, source):
    """Load the model, run the sampler with a terminal progress bar."""
    from tqdm import tqdm

    from flipsketch.models import load_model, pick_device, pick_dtype
    from flipsketch.pipeline import animate
    from flipsketch.progress import ProgressEvent
    from flipsketch.tiny_model import TINY_NOTICE

    for note in params.validate():
        print(f"warning: {note}", file=sys.stderr)
    device = pick_device(args.device)
    model = load_model(source, dtype=pick_dtype(args.dtype, device), device=device)
    if model.is_tiny_random:
        print(TINY_NOTICE, file=sys.stderr)
    with tqdm(total=1000, unit="‰", bar_format="{desc:<8} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar:

        def show(event: ProgressEvent) -> None:
            bar.set_description_str(event.stage, refresh=False)
            bar.update(round(event.fraction * 1000) - bar.n)

        return model, animate(model, sketch, params, progress=show)


def _animate(args: argparse.Namespace) -> int:
    from flipsketch.models import source_from
    from flipsketch.outputs import write_animation
    from flipsketch.params import AnimateParams
    from flipsketch.sketch import read_sketch

    params = AnimateParams.from_dict(_given_params(args))
    sketch = read_sketch(args.sketch, params.width, params.height)
    model, animation = _generate(args, params, sketch, source_from(args.model, args.subfolder, args.revision))
    _rank(args, animation, sketch, model)
    out = write_animation(animation, model, args.out, sketch, fps=args.fps or 10, overwrite=args.overwrite)
    print(f"Wrote {out} ({params.frames} frames × {params.variants} variant(s), {animation.stats['total_s']:.1f} s)")
    _print_ranking(animation)
    return 0


def _rank(args: argparse.Namespace, animation, sketch, model) -> None:
    """Score the variants (CLIP with --clip-model or $FLIPSKETCH_CLIP_MODEL, else chamfer), best first."""
    from flipsketch.ranking import rank_variants, variant_scorer

    rank_variants(animation, sketch, variant_scorer(args.clip_model, str(model.device)))


def _print_ranking(animation) -> None:
    """Variants best first with their scores; hidden ones (below --min-score) marked."""
    from flipsketch.outputs import variant_folder

    if len(animation.ranking) < 2 and animation.params.min_score is None:
        return
    print(f"Variants, best first ({animation.score_method} similarity to the sketch):")
    for entry in animation.ranking:
        hidden = f"  hidden: below --min-score {animation.params.min_score}" if entry["hidden"] else ""
        folder = variant_folder(animation, entry["seed"])
        print(f"  seed {entry['seed']:>6}  score {entry['score']:.4f}  {folder}{hidden}")
    if all(entry["hidden"] for entry in animation.ranking):
        print("warning: every variant scored below --min-score; try more variants or other seeds", file=sys.stderr)


def _extend(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from flipsketch.errors import InputError
    from flipsketch.models import ModelSource, source_from
    from flipsketch.outputs import write_animation
    from flipsketch.params import AnimateParams
    from flipsketch.sketch import prepare_reference

    parent = Path(args.parent)
    try:
        record = json.loads((parent / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"'{parent}' is not a FlipSketch result ({exc}).", "Pass a folder written by animate/extend."
        ) from None
    best = (record.get("variants") or [{"seed": record["seeds"][0]}])[0]["seed"]
    seed = args.variant if args.variant is not None else best
    if seed not in record["seeds"]:
        raise InputError(f"'{parent}' has no variant with seed {seed}.", f"Choose one of {record['seeds']}.")
    sub = "." if len(record["seeds"]) == 1 else f"variant_{seed}"
    last = sorted((parent / sub).glob("frame_*.png"))[-1]
    inherited = {k: v for k, v in record["params"].items() if k != "lambda"}
    if args.quality:  # a new preset replaces the parent's preset-governed settings
        from flipsketch.params import QUALITY_PRESETS

        preset_fields = {name for preset in QUALITY_PRESETS.values() for name in preset}
        inherited = {k: v for k, v in inherited.items() if k not in preset_fields}
    params = AnimateParams.from_dict({**inherited, "seed": seed, "variants": 1, **_given_params(args)})
    sketch = prepare_reference(last, params.width, params.height)
    model_record = record["model"]
    source = (
        source_from(args.model, args.subfolder, args.revision)
        if args.model
        else ModelSource(model_record["name"], model_record["subfolder"], model_record["revision"])
    )
    model, animation = _generate(args, params, sketch, source)
    _rank(args, animation, sketch, model)
    first = int(last.stem.split("_")[1]) + 1
    extra = {"parent": {"folder": str(parent.resolve()), "seed": seed, "frame": last.name}, "first_frame_index": first}
    out = write_animation(
        animation.as_segment(), model, args.out, sketch, args.fps or record["fps"], args.overwrite, first, extra
    )
    print(f"Wrote {out}: frames {first}..{first + params.frames - 2} continue {parent} after {last.name}")
    return 0


def _add_animate_options(parser: argparse.ArgumentParser, prompt_required: bool) -> None:
    """Animation options; unset ones stay None (see _given_params)."""
    d = _defaults()
    parser.add_argument("--prompt", required=prompt_required, help="what should happen, e.g. 'the cat turns its head'")
    parser.add_argument("--negative-prompt")
    parser.add_argument("--model", help="Hugging Face id or folder (default: $FLIPSKETCH_MODEL or the published model)")
    parser.add_argument("--subfolder", help="folder inside the model repository")
    parser.add_argument("--revision", help="model repository revision")
    parser.add_argument("--frames", type=int, help=f"frames to generate (default {d.frames}; trained on 16)")
    parser.add_argument("--steps", type=int, help=f"DDIM steps (default {d.steps})")
    parser.add_argument("--guidance", type=float, help=f"classifier-free guidance (default {d.guidance})")
    parser.add_argument("--motion", type=float, help=f"0..1, higher = more motion, λ = 1 − m (default {d.motion})")
    parser.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    parser.add_argument("--variants", type=int, help="seeds seed..seed+n-1 in one batch (default 1)")
    parser.add_argument("--tau-align", type=int, help=f"align at step indices < this (default {d.tau_align})")
    parser.add_argument("--tau-compose", type=int, help=f"compose at step indices <= this (default {d.tau_compose})")
    parser.add_argument("--no-align", action="store_true", help="skip iterative frame alignment (quality draft)")
    parser.add_argument("--align-iters", type=int, help=f"Adam iterations per step (default {d.align_iters})")
    parser.add_argument("--align-lr", type=float, help=f"Adam learning rate (default {d.align_lr})")
    parser.add_argument(
        "--align-tol",
        type=float,
        help=f"early stop when the loss improves by less (relative; default {d.align_tol}, 0 = paper-exact)",
    )
    parser.add_argument(
        "--lora",
        dest="loras",
        action="append",
        metavar="PATH[=WEIGHT]",
        help="apply a LoRA: a `flipsketch train-lora` folder or a .safetensors file (kohya-ss or diffusers), "
        "weight 1 unless given; repeat to combine several",
    )
    parser.add_argument("--no-compose-spatial", action="store_true", help="ablation: no spatial composition")
    parser.add_argument("--no-compose-temporal", action="store_true", help="ablation: no temporal composition")
    parser.add_argument("--width", type=int, help=f"generation width (default {d.width})")
    parser.add_argument("--height", type=int, help=f"generation height (default {d.height})")
    parser.add_argument("--released-input-range", action="store_true", help="feed the VAE [0,1] like the released code")
    parser.add_argument("--no-binarize", action="store_true", help="keep gray frames (no Otsu threshold)")
    parser.add_argument("--output-size", type=int, help="longer side of the saved frames in pixels")
    parser.add_argument("--fps", type=int, help="preview frame rate (default 10)")
    _add_quality_options(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _add_quality_options(parser: argparse.ArgumentParser) -> None:
    """Quality preset, reference construction and variant ranking (issue 14)."""
    from flipsketch.params import QUALITY_PRESETS, QUALITY_TIME_RATIOS, REFERENCES

    presets = "; ".join(f"{name}: {QUALITY_TIME_RATIOS[name]}x plain text-to-video" for name in QUALITY_PRESETS)
    parser.add_argument(
        "--quality",
        choices=list(QUALITY_PRESETS),
        help=f"preset: draft = no alignment, standard = early-stopped alignment (default), paper = the paper's "
        f"schedule; options given beside it win (measured CPU time: {presets})",
    )
    parser.add_argument(
        "--reference", choices=list(REFERENCES), help="reference construction: inversion (ours, default) or released"
    )
    parser.add_argument(
        "--min-score", type=float, help="mark variants scoring below this as hidden (their files are kept)"
    )
    parser.add_argument(
        "--clip-model",
        help="CLIP model (id or folder) that ranks variants (default: $FLIPSKETCH_CLIP_MODEL, else offline chamfer)",
    )


def _add_bench_quality_options(parser: argparse.ArgumentParser) -> None:
    d = _defaults()
    parser.add_argument("--align-tol", type=float, default=d.align_tol, help="early-stop tolerance of workload (c)")
    parser.add_argument("--no-paper", action="store_true", help="skip workload (d), the paper-exact alignment")


def _add_bench_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=["tiny", "mid", "full"], default="tiny")
    parser.add_argument("--full", action="store_const", const="full", dest="size", help="same as --size full")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    _add_bench_quality_options(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--count-flops", action="store_true", help="count FLOPs (one extra run each; for GPUs)")
    parser.add_argument("--train", action="store_true", help="LoRA training steps and LoRA inference instead")
    parser.add_argument("--train-steps", type=int, default=5, help="training steps per --train workload")
    parser.add_argument(
        "--model-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "flipsketch", "bench-models")
    )


def _defaults():
    from flipsketch.params import AnimateParams

    return AnimateParams(prompt="-")


def _train_defaults():
    from flipsketch.train_config import TrainConfig

    return TrainConfig()


def _batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flipsketch.board import parse_board, run_board, sequential
    from flipsketch.models import load_model, pick_device, pick_dtype, source_from

    shots = parse_board(Path(args.board))  # schema errors before any model is loaded
    source = source_from(args.model, args.subfolder, args.revision)
    device = pick_device(args.device)
    if args.ray:
        from flipsketch.farm import ray_generator

        generate = ray_generator(args.ray, source, device, args.dtype)
    else:
        generate = sequential(load_model(source, dtype=pick_dtype(args.dtype, device), device=device))
    from flipsketch.ranking import variant_scorer

    scorer = variant_scorer(args.clip_model, device)
    report = run_board(shots, Path(args.out), generate, force=args.force, scorer=scorer)
    failed = [name for name, entry in report.items() if entry["state"] == "failed"]
    print(f"{len(report) - len(failed)} of {len(report)} shots done; report: {Path(args.out) / 'report.json'}")
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flipsketch.models import pick_device, pick_dtype, source_from
    from flipsketch.server import serve

    device = pick_device(args.device)
    serve(
        args.host,
        args.port,
        Path(args.jobs),
        source_from(args.model, args.subfolder, args.revision),
        device,
        pick_dtype(args.dtype, device),
        token=_server_token(args),
        ready_file=Path(args.ready_file) if args.ready_file else None,
        parent_pid=args.parent_pid,
        allow_hosts=args.allow_host,
        docs=args.docs,
        allow_paths=args.allow_paths,
    )
    return 0


def _server_token(args: argparse.Namespace) -> str | None:
    """--token, else the first line of --token-file, else $FLIPSKETCH_TOKEN;
    None: a random one. A file or the environment keeps the token out of the
    process list, where other local users can read a command line."""
    if args.token:
        return args.token
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise FlipSketchError(f"Cannot read the token file {args.token_file}: {exc}.", "Check the path.") from None
        if not token:
            raise FlipSketchError(f"The token file {args.token_file} is empty.", "Write the token on its first line.")
        return token
    return os.environ.get("FLIPSKETCH_TOKEN") or None


def _train_lora(args: argparse.Namespace) -> int:

    from tqdm import tqdm

    from flipsketch.clips import load_clips
    from flipsketch.models import load_model, pick_device, pick_dtype, source_from
    from flipsketch.train import train_lora
    from flipsketch.train_config import TrainConfig

    config = TrainConfig(
        rank=args.rank,
        alpha=args.alpha,
        learning_rate=args.lr,
        steps=args.steps,
        batch=args.batch,
        resolution=args.resolution,
        frames=args.frames,
        keep_holds=args.keep_holds,
        caption_dropout=args.caption_dropout,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing,
        validation_steps=args.validation_steps,
    )
    config.validate()
    clips = load_clips(args.data, config.resolution, config.frames, config.keep_holds)  # before the model loads
    if args.check_data:
        from flipsketch.clips import write_previews
        from flipsketch.train_config import claim_out

        folder = write_previews(clips, claim_out(args.out) / "data-preview")
        for clip in clips:
            holds = f" ({clip.holds} held frames dropped)" if clip.holds else ""
            print(f"{clip.name}: {len(clip.frames)} drawings{holds}, caption: {clip.caption}")
        print(f"{len(clips)} clips are usable; what the trainer sees: {folder}")
        return 0
    device = pick_device(args.device)
    model = load_model(
        source_from(args.model, args.subfolder, args.revision), dtype=pick_dtype(args.dtype, device), device=device
    )
    with tqdm(total=config.steps, unit="step", desc="train") as bar:

        def show(step: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        result = train_lora(
            args.data, args.out, model, config, resume=args.resume, overwrite=args.overwrite, on_step=show, clips=clips
        )
    losses = result.record["losses"]
    print(f"LoRA written to {result.out} ({result.record['steps_done']} steps, final loss {losses[-1]:.4f})")
    if config.validation_steps:
        print(f"Validation animation: {result.out / 'validation'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.trace:
        return _bench_trace(args)
    from flipsketch.bench import main as bench_main

    return bench_main(args)


def _eval(args: argparse.Namespace) -> int:
    """Score finished runs, or animate and score the ablation grid (one model load)."""
    from pathlib import Path

    from tqdm import tqdm

    from flipsketch.errors import InputError
    from flipsketch.evaluation import (
        grid_settings,
        load_grid,
        markdown,
        parse_seeds,
        run_grid,
        score_runs,
        table,
        write_table,
    )
    from flipsketch.metrics import load_clip, load_xclip
    from flipsketch.models import load_model, pick_device, pick_dtype, source_from

    if bool(args.grid) == bool(args.runs):
        raise InputError("Pass result folders or --grid SKETCHES_DIR (not both).", "See `flipsketch eval --help`.")
    device = pick_device(args.device)
    grid = None
    if args.grid:
        if not args.prompts or not args.out:
            raise InputError("--grid needs --prompts FILE and --out FOLDER.", "See `flipsketch eval --help`.")
        extra = {"width": args.width, "height": args.height, **({"quality": args.quality} if args.quality else {})}
        settings = grid_settings(args.frames, args.steps, extra)
        grid = load_grid(Path(args.grid), Path(args.prompts), parse_seeds(args.seeds), settings, Path(args.out))
    clip, xclip = load_clip(args.clip_model, device), load_xclip(args.xclip_model, device)
    if grid is not None:
        model = load_model(
            source_from(args.model, args.subfolder, args.revision), dtype=pick_dtype(args.dtype, device), device=device
        )
        with tqdm(total=len(grid.cells()), unit="clip", desc="eval") as bar:
            summary = run_grid(grid, model, clip, xclip, on_cell=lambda done, _: bar.update(done - bar.n))
        title = f"FlipSketch eval grid: {len(grid.sketches)} sketches × seeds {args.seeds}, {model.source.describe()}"
        out: Path | None = grid.out
    else:
        scores = score_runs([Path(r) for r in args.runs], clip, xclip)
        summary = table({label: [clip_scores] for label, clip_scores in scores.items()})
        title, out = "FlipSketch eval of finished runs", Path(args.out) if args.out else None
    text = markdown(summary, title)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_table(out, summary, text)
        print(f"Wrote {out / 'table.json'} and {out / 'table.md'}")
    return 0


def _add_eval_parser(commands: argparse._SubParsersAction) -> None:
    from flipsketch.metrics import CLIP_MODEL, XCLIP_MODEL

    ev = commands.add_parser("eval", help="the paper's Table 1 metrics on finished runs or an ablation grid")
    ev.add_argument("runs", nargs="*", help="result folders written by animate/extend/batch")
    ev.add_argument("--grid", metavar="SKETCHES_DIR", help="animate every sketch × seed under every ablation row")
    ev.add_argument("--prompts", help="JSON {sketch file name or stem: prompt} for --grid")
    ev.add_argument("--seeds", default="0-2", help="seeds of the grid, e.g. 0-2 or 0,3,7 (default 0-2)")
    ev.add_argument("--out", help="folder for table.json/table.md (and the grid's per-clip results; resumable)")
    ev.add_argument("--frames", type=int, default=10, help="frames per grid clip (default 10)")
    ev.add_argument("--steps", type=int, default=25, help="DDIM steps per grid clip (default 25)")
    ev.add_argument("--width", type=int, default=256, help="generation width of the grid (default 256)")
    ev.add_argument("--height", type=int, default=256, help="generation height of the grid (default 256)")
    ev.add_argument("--quality", choices=["draft", "standard", "paper"], help="quality preset of the grid's rows")
    ev.add_argument("--clip-model", default=CLIP_MODEL, help=f"CLIP model, id or folder (default {CLIP_MODEL})")
    ev.add_argument("--xclip-model", default=XCLIP_MODEL, help=f"X-CLIP model, id or folder (default {XCLIP_MODEL})")
    ev.add_argument("--model", help="animation model for --grid (default: $FLIPSKETCH_MODEL or the published model)")
    ev.add_argument("--subfolder")
    ev.add_argument("--revision")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ev.set_defaults(func=_eval)


def _bench_trace(args: argparse.Namespace) -> int:
    from flipsketch.trace_bench import bench_command

    return bench_command(args)


def _trace(args: argparse.Namespace) -> int:
    from flipsketch.trace_bench import trace_command

    return trace_command(args)


def _add_trace_parsers(commands: argparse._SubParsersAction, bench: argparse.ArgumentParser) -> None:
    """`flipsketch trace` and `flipsketch bench --trace` (tracing frames to strokes)."""
    trace = commands.add_parser("trace", help="trace a folder of frames (one clip) to strokes and print their figures")
    trace.add_argument("frames_dir", help="folder of line drawings (PNG, JPEG, …), traced in name order as one clip")
    trace.add_argument("--out", help="write the traced strokes (flipsketch.traced JSON) to this file")
    trace.add_argument("--workers", type=int, help="threads for the per-frame work (default: one per CPU)")
    trace.set_defaults(func=_trace)
    bench.add_argument("--trace", action="store_true", help="the stroke tracer against the previous one instead")
    bench.add_argument("--trace-size", type=int, default=256, help="side of the --trace test drawings in pixels")


def _download(args: argparse.Namespace) -> int:
    from flipsketch import MODEL_LICENCE, PUBLISHED_MODEL
    from flipsketch.models import download_model, source_from

    source = source_from(args.id, args.subfolder, args.revision)
    if source.name == PUBLISHED_MODEL:
        print(MODEL_LICENCE)
    print(f"Model {source.describe()} is in {download_model(source)}")
    return 0


def _list_models(args: argparse.Namespace) -> int:
    from flipsketch.models import cached_models, hub_cache_dir

    models = cached_models()
    print(f"Model cache: {hub_cache_dir()}")
    print("\n".join(models) if models else "(no models downloaded)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flipsketch", description="Animate sketches with FlipSketch.")
    parser.add_argument("--version", action="version", version=f"flipsketch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    doctor = commands.add_parser("doctor", help="check Python, torch, GPU and model; exit 1 if generation cannot run")
    doctor.set_defaults(func=_doctor)

    anim = commands.add_parser("animate", help="animate a sketch (image or stroke JSON) from a motion prompt")
    anim.add_argument("sketch", help="image file (PNG, JPEG, …) or flipsketch.strokes JSON")
    anim.add_argument("--out", required=True, help="output folder (written atomically)")
    _add_animate_options(anim, prompt_required=True)
    anim.set_defaults(func=_animate)

    ext = commands.add_parser("extend", help="continue a clip from its last frame (a new segment)")
    ext.add_argument("parent", help="a folder written by animate or extend")
    ext.add_argument("--out", required=True, help="output folder for the new segment")
    ext.add_argument("--variant", type=int, help="seed of the parent's variant to continue (default: its best)")
    _add_animate_options(ext, prompt_required=False)
    ext.set_defaults(func=_extend)

    batch = commands.add_parser("batch", help="animate every shot of a storyboard JSON (resumable; --ray for a farm)")
    batch.add_argument("board", help="flipsketch.board JSON (see flipsketch/board.py)")
    batch.add_argument("--out", required=True, help="output folder: one sub-folder per shot, report.json, animatic.mp4")
    batch.add_argument("--ray", help="'local' (Ray on this machine), 'auto' (running cluster) or a cluster address")
    batch.add_argument("--force", action="store_true", help="redo shots that are already done")
    batch.add_argument("--model", help="Hugging Face id or folder (default: $FLIPSKETCH_MODEL or the published model)")
    batch.add_argument("--subfolder")
    batch.add_argument("--revision")
    batch.add_argument("--device", default="auto")
    batch.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    batch.add_argument("--clip-model", help="CLIP model that ranks each shot's variants (default: offline chamfer)")
    batch.set_defaults(func=_batch)

    d = _train_defaults()
    train = commands.add_parser("train-lora", help="train a sketch-style LoRA on your own animations (resumable)")
    train.add_argument("data", help="folder of clips: PNG-frame folders, GIFs or MP4s, each with a caption .txt")
    train.add_argument("--out", required=True, help="LoRA folder: adapter, checkpoints/, validation/, run.json")
    train.add_argument("--model", help="base model: Hugging Face id or folder (default: the published model)")
    train.add_argument("--subfolder")
    train.add_argument("--revision")
    train.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    train.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    train.add_argument("--lr", type=float, default=d.learning_rate, help=f"learning rate (default {d.learning_rate})")
    train.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    train.add_argument("--batch", type=int, default=d.batch, help=f"clips per step (default {d.batch})")
    train.add_argument("--resolution", type=int, default=d.resolution, help=f"frame size (default {d.resolution})")
    train.add_argument("--frames", type=int, default=d.frames, help=f"frames per sample (default {d.frames})")
    train.add_argument(
        "--keep-holds", action="store_true", help="train on frames that repeat the previous drawing too (default: drop)"
    )
    train.add_argument("--caption-dropout", type=float, default=d.caption_dropout, help="fraction of empty prompts")
    train.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    train.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="newest checkpoints kept")
    train.add_argument("--seed", type=int, default=d.seed)
    train.add_argument("--gradient-checkpointing", action="store_true", help="less GPU memory, about 30%% slower")
    train.add_argument(
        "--validation-steps", type=int, default=d.validation_steps, help="DDIM steps of the validation clip (0: none)"
    )
    train.add_argument(
        "--check-data", action="store_true", help="only check the clips and write what the trainer sees to --out"
    )
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    train.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out")
    train.add_argument("--device", default="auto")
    train.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 base on CUDA")
    train.set_defaults(func=_train_lora)

    serve = commands.add_parser("serve", help="run the HTTP server that Blender and scripts submit jobs to")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port (see --ready-file)")
    serve.add_argument("--jobs", default=os.path.join(os.path.expanduser("~"), ".flipsketch", "jobs"))
    serve.add_argument("--model", help="default model: Hugging Face id or folder")
    serve.add_argument("--subfolder")
    serve.add_argument("--revision")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    serve.add_argument("--token", help="bearer token (other local users can see it: prefer --token-file)")
    serve.add_argument("--token-file", help="read the bearer token from this file's first line")
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (repeatable; '*' for any). Default: the bound address, "
        "localhost and 127.0.0.1 (and this machine's names and addresses when bound to 0.0.0.0)",
    )
    serve.add_argument("--docs", action="store_true", help="serve /v1/docs, /v1/redoc, /v1/openapi.json (token needed)")
    serve.add_argument("--ready-file", help="write port, token, pid and API version here once listening")
    serve.add_argument("--parent-pid", type=int, help="exit when this process ends")
    serve.add_argument(
        "--allow-path",
        action="append",
        dest="allow_paths",
        metavar="FOLDER",
        help="confine the model, LoRA, training data and output paths that requests name to this folder "
        "(repeatable; for a shared or remote server)",
    )
    serve.set_defaults(func=_serve)

    _add_eval_parser(commands)

    bench = commands.add_parser("bench", help="time plain text-to-video vs FlipSketch on one model (ratios)")
    _add_bench_options(bench)
    bench.set_defaults(func=_bench)
    _add_trace_parsers(commands, bench)

    model = commands.add_parser("model", help="manage models")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    download = model_commands.add_parser("download", help="download a model into the Hugging Face cache (resumable)")
    download.add_argument("id", help="Hugging Face model id, e.g. Hmrishav/t2v_sketch-lora")
    download.add_argument("--subfolder", help="folder inside the repository (published model: checkpoint-2500)")
    download.add_argument("--revision")
    download.set_defaults(func=_download)
    listing = model_commands.add_parser("list", help="list downloaded models")
    listing.set_defaults(func=_list_models)
    tiny = model_commands.add_parser(
        "create-tiny", help="write a tiny random model in the published layout (tests, demo)"
    )
    tiny.add_argument("dir", help="new folder for the model")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_create_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FlipSketchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
