"""Animation parameters and their validation (no torch import: the CLI and the
HTTP service validate requests before any model is touched)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from flipsketch.errors import InputError
from flipsketch.lora import LoraRef, check_loras, parse_loras

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


def typed_fields(cls: type, data: dict[str, Any], what: str, skip: frozenset[str] | set[str] = frozenset()) -> dict:
    """Constructor arguments for dataclass `cls` from JSON: an unknown name or a
    value of the wrong type is an InputError naming the field; ints become
    floats where a float is expected. Fields in `skip` pass through unchecked."""
    known = {f.name: f.type for f in fields(cls)}
    for name, value in data.items():
        if name not in known:
            raise InputError(f"Unknown {what} '{name}'.", f"Known: {', '.join(known)}.")
        if name in skip:
            continue
        expected = known[name].replace(" | None", "")
        optional = known[name].endswith("| None")
        ok = (value is None and optional) or {
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
        }[expected]
        if not ok:
            raise InputError(
                f"{what.capitalize()} '{name}' must be {expected}, not {value!r}.", "Fix the value's type."
            )
    return {k: float(v) if known[k].replace(" | None", "") == "float" and v is not None else v for k, v in data.items()}


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
    def from_dict(cls, data: Any) -> AnimateParams:
        """Parameters from JSON (HTTP jobs, storyboards), checked field by field:
        an unknown name or a wrong type is an InputError naming the field."""
        if not isinstance(data, dict):
            raise InputError("'params' must be a JSON object.", "Send {'prompt': '...', ...}.")
        kwargs = typed_fields(cls, data, "parameter", skip={"loras"})  # LoRAs: checked in __post_init__
        kwargs = {**quality_preset(kwargs.get("quality")), **kwargs}
        if "prompt" not in data:
            raise InputError("Parameter 'prompt' is missing.", "Describe the motion, e.g. 'the cat turns its head'.")
        params = cls(**kwargs)
        params.validate()
        return params

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lambda": self.lam}

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
        if self.reference not in REFERENCES:
            raise bad("reference", f"is {self.reference!r}", f"Use one of: {', '.join(REFERENCES)}.")
        if self.quality is not None and self.quality not in QUALITY_PRESETS:
            raise bad("quality", f"is {self.quality!r}", f"Use one of: {', '.join(QUALITY_PRESETS)}.")
        if self.align_tol < 0 or self.align_tol >= 1:
            raise bad("align_tol", f"is {self.align_tol}", "Use 0 (paper-exact) or a relative tolerance below 1.")
        if self.min_score is not None and not -1 <= self.min_score <= 1:
            raise bad("min_score", f"is {self.min_score}", "Use a score between -1 and 1 (or none to show all).")
        check_loras(self.loras)
        notes = []
        if self.frames > TRAINED_FRAMES:
            notes.append(f"{self.frames} frames is more than the {TRAINED_FRAMES} the model was trained on.")
        return notes
