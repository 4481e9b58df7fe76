"""Animation parameters and their validation (no torch import: the CLI and the
HTTP service validate requests before any model is touched)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flipsketch.errors import InputError
from flipsketch.lora import LoraRef, check_loras, parse_loras
from flipsketch.validation import MAX_PROMPT, FieldError, Roots, integer, number, text, typed_fields

TRAINED_FRAMES = 16
MAX_FRAMES = 32
REFERENCES = ("inversion", "released")  # how the reference trajectory is built (see pipeline)
STANDARD_ALIGN_TOL = 0.02  # early-stopped alignment: the default ("standard") quality
# Named quality presets: the parameters each sets (explicitly given fields win).
QUALITY_PRESETS: dict[str, dict[str, Any]] = {
    "draft": {"align": False},  # composition only, like the released demo app
    "standard": {"align": True, "align_tol": STANDARD_ALIGN_TOL},  # early-stopped alignment
    "paper": {"align": True, "align_tol": 0.0},  # the paper's fixed 10 x 10 alignment schedule
}
# Measured time of each preset over plain text-to-video sampling (`flipsketch bench`,
# mid model, 10 frames, 256², 25 steps, CPU; docs/benchmarks.md). For UI tooltips.
QUALITY_TIME_RATIOS: dict[str, float] = {"draft": 0.94, "standard": 1.94, "paper": 5.71}

MAX_VARIANTS = 16
MAX_GUIDANCE = 50.0
MAX_ALIGN_ITERS = 200


def quality_preset(name: Any) -> dict[str, Any]:
    """The parameters a quality preset sets ({} for None or an unknown name,
    which `validate` then reports)."""
    return dict(QUALITY_PRESETS.get(name, {})) if isinstance(name, str) else {}


@dataclass
class AnimateParams:
    """Everything that decides an animation; defaults are the paper's, except that
    frame alignment stops early (quality "standard"; `align_tol=0` is paper-exact)."""

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
    align_tol: float = STANDARD_ALIGN_TOL  # > 0: stop a step's alignment when the loss improves by less
    # (relative); 0 = the paper's fixed schedule
    compose_spatial: bool = True
    compose_temporal: bool = True
    width: int = 256
    height: int = 256
    released_input_range: bool = False  # feed the VAE [0,1] like the released code (A/B only)
    binarize: bool = True  # Otsu threshold the frames back to clean lines
    output_size: int | None = None  # longer side of the saved frames; None = generation size
    loras: list[LoraRef] = field(default_factory=list)  # style adapters applied on top of the model
    reference: str = "inversion"  # "inversion" (ours) or "released" (the authors' construction), see pipeline
    quality: str | None = None  # preset from QUALITY_PRESETS that from_dict expanded; None = fields as given
    min_score: float | None = None  # variants scoring below are marked hidden (see scoring)

    def __post_init__(self) -> None:
        # Jobs and run.json store LoRAs as JSON objects; the sampler wants LoraRefs.
        self.loras = parse_loras(self.loras)

    @property
    def lam(self) -> float:
        return 1.0 - self.motion

    @classmethod
    def from_dict(cls, data: Any, roots: Roots | None = None) -> AnimateParams:
        """Parameters from JSON (HTTP jobs, storyboards), checked field by field:
        an unknown name, a wrong type or a value out of bounds is a FieldError
        naming the field. LoRA paths must lie inside `roots` when it has any."""
        if not isinstance(data, dict):
            raise InputError("'params' must be a JSON object.", "Send {'prompt': '...', ...}.")
        kwargs = typed_fields(cls, data, "parameter", skip={"loras"})  # LoRAs: checked in __post_init__
        kwargs = {**quality_preset(kwargs.get("quality")), **kwargs}
        if "prompt" not in data:
            raise FieldError(
                "prompt", "Parameter 'prompt' is missing.", "Describe the motion, e.g. 'the cat turns its head'."
            )
        params = cls(**kwargs)
        for index, ref in enumerate(params.loras):
            (roots or Roots()).path(f"loras[{index}].path", ref.path)
        params.validate()
        return params

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lambda": self.lam}

    def validate(self) -> list[str]:
        """Raise a FieldError naming the field and the fix; return warnings.

        Bounds: prompts up to MAX_PROMPT characters; frames 2..MAX_FRAMES;
        steps 1..1000; guidance 0..MAX_GUIDANCE; motion 0..1; variants
        1..MAX_VARIANTS; seed 0..2^63-1; width/height multiples of 8 in 64..1024;
        tau_align 0..1000, tau_compose -1..1000; align_iters 1..MAX_ALIGN_ITERS;
        align_lr in (0, 1]; align_tol 0..1; output_size 16..4096 or None;
        reference in REFERENCES; quality in QUALITY_PRESETS or None; min_score -1..1 or None;
        LoRA weights within ±MAX_WEIGHT. Every float must be finite."""
        motion_hint = "Describe the motion, e.g. 'the cat turns its head'."
        text("prompt", self.prompt, MAX_PROMPT, "Parameter")
        if not self.prompt.strip():
            raise FieldError("prompt", "Parameter 'prompt' is empty.", motion_hint)
        text("negative_prompt", self.negative_prompt, MAX_PROMPT, "Parameter")
        integer("frames", self.frames, 2, MAX_FRAMES, hint=f"Use 2 to {MAX_FRAMES} frames.")
        integer("steps", self.steps, 1, 1000, hint="Use 1 to 1000 DDIM steps (25 is the default).")
        number("motion", self.motion, 0, 1, hint="Use a motion strength between 0 and 1.")
        number(
            "guidance",
            self.guidance,
            0,
            MAX_GUIDANCE,
            hint=f"Use a guidance scale from 0 to {MAX_GUIDANCE:g} (9 is the default).",
        )
        integer("variants", self.variants, 1, MAX_VARIANTS, hint=f"Use 1 to {MAX_VARIANTS} variants per job.")
        integer("seed", self.seed, 0, 2**63 - 1, hint="Use a seed between 0 and 2^63-1.")
        for name in ("width", "height"):
            value = integer(name, getattr(self, name), 64, 1024)
            if value % 8:
                raise FieldError(
                    name,
                    f"Parameter '{name}' is {value}.",
                    "Use a multiple of 8 between 64 and 1024 (256 is the trained size).",
                )
        integer("tau_align", self.tau_align, 0, 1000, hint="Use τ1 from 0 to the number of steps.")
        integer(
            "tau_compose", self.tau_compose, -1, 1000, hint="Use τ2 from -1 (composition off) to the number of steps."
        )
        integer(
            "align_iters",
            self.align_iters,
            1,
            MAX_ALIGN_ITERS,
            hint=f"Use 1 to {MAX_ALIGN_ITERS} iterations (10 is the default).",
        )
        number("align_lr", self.align_lr, 0, 1, low_open=True, hint="Use a small positive rate such as 1e-3.")
        number("align_tol", self.align_tol, 0, 1, hint="Use 0 (no early stop) up to 1, e.g. 0.02.")
        for name in ("align", "compose_spatial", "compose_temporal", "released_input_range", "binarize"):
            if not isinstance(getattr(self, name), bool):
                raise FieldError(name, f"Parameter '{name}' must be true or false.")
        if self.output_size is not None:
            integer("output_size", self.output_size, 16, 4096, hint="Use 16 to 4096 pixels.")
        if self.reference not in REFERENCES:
            raise FieldError(
                "reference", f"Parameter 'reference' is {self.reference!r}.", f"Use one of: {', '.join(REFERENCES)}."
            )
        if self.quality is not None and self.quality not in QUALITY_PRESETS:
            raise FieldError(
                "quality", f"Parameter 'quality' is {self.quality!r}.", f"Use one of: {', '.join(QUALITY_PRESETS)}."
            )
        if self.min_score is not None:
            number("min_score", self.min_score, -1, 1, hint="Use a score between -1 and 1 (or none to show all).")
        check_loras(self.loras)
        notes = []
        if self.frames > TRAINED_FRAMES:
            notes.append(f"{self.frames} frames is more than the {TRAINED_FRAMES} the model was trained on.")
        return notes
