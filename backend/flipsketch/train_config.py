"""LoRA training options and the layout of a training run's folder.

No torch import: the CLI builds its help from these, and the server checks a
training request with them before it queues the job."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipsketch import SCHEMA_VERSION
from flipsketch.errors import InputError
from flipsketch.jsonio import write_json
from flipsketch.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from flipsketch.validation import FieldError, integer, number, typed_fields

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer.pt"
VALIDATION = "validation"
RUN_MARKER = ".flipsketch-run.json"  # written first: this folder is a training run
MAX_ALPHA = 4096.0
MAX_STEPS = 1_000_000


@dataclass
class TrainConfig:
    """Everything that decides a training run; recorded in run.json."""

    rank: int = 16
    alpha: float | None = None  # None = rank: the adapter applies at scale 1
    learning_rate: float = 1e-4
    steps: int = 1000
    batch: int = 1
    resolution: int = 256
    frames: int = 16
    keep_holds: bool = False  # train on repeated frames too (see clips.py)
    caption_dropout: float = 0.1  # empty prompt this often, so guidance keeps an unconditional branch
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    seed: int = 0
    gradient_checkpointing: bool = False
    validation_steps: int = 25  # DDIM steps of the validation animation; 0 = none

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """Options from JSON (a training job), each problem naming its field."""
        if not isinstance(data, dict):
            raise InputError("'config' must be a JSON object.", "Send {'steps': 1000, 'rank': 16, ...}.")
        config = cls(**typed_fields(cls, data, "training option"))
        config.validate()
        return config

    def validate(self) -> None:
        """Raise a FieldError naming the option and the fix.

        Bounds: rank 1..512; alpha in (0, MAX_ALPHA] or None; learning_rate in
        (0, 1]; steps 1..MAX_STEPS; batch 1..64; resolution a multiple of 8 in
        64..1024; frames 2..32; caption_dropout in [0, 1); checkpoint_every
        1..MAX_STEPS; keep_checkpoints 1..1000; seed 0..2^63-1;
        validation_steps 0..1000. Every float must be finite."""
        what = "Training option"
        integer("rank", self.rank, 1, 512, what, "Use a LoRA rank from 1 to 512 (16 is typical).")
        if self.alpha is not None:
            hint = f"Use a positive alpha up to {MAX_ALPHA:g}, or leave it out to use the rank."
            number("alpha", self.alpha, 0, MAX_ALPHA, what, low_open=True, hint=hint)
        hint = "Use a small positive rate such as 1e-4."
        number("learning_rate", self.learning_rate, 0, 1, what, low_open=True, hint=hint)
        integer("steps", self.steps, 1, MAX_STEPS, what)
        integer("batch", self.batch, 1, 64, what, "Use a batch of 1 to 64.")
        hint = "Use a multiple of 8 from 64 to 1024 (256 is the trained size)."
        if integer("resolution", self.resolution, 64, 1024, what, hint) % 8:
            raise FieldError("resolution", f"Training option 'resolution' is {self.resolution}.", hint)
        integer("frames", self.frames, 2, 32, what, "Use 2 to 32 frames per sample (16 is the trained length).")
        number("caption_dropout", self.caption_dropout, 0, 1, what)
        if self.caption_dropout == 1:
            raise FieldError("caption_dropout", "Training option 'caption_dropout' is 1.0.", "Use a fraction below 1.")
        integer("checkpoint_every", self.checkpoint_every, 1, MAX_STEPS, what)
        integer("keep_checkpoints", self.keep_checkpoints, 1, 1000, what)
        integer("seed", self.seed, 0, 2**63 - 1, what)
        integer("validation_steps", self.validation_steps, 0, 1000, what, "Use 0 (no validation) to 1000.")
        for name in ("keep_holds", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise FieldError(name, f"Training option '{name}' must be true or false.")


def checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run's folder, oldest first."""
    return sorted(p for p in (Path(out) / CHECKPOINTS).glob("step-*") if (p / TRAINER_STATE).is_file())


def is_run(out: Path) -> bool:
    """Whether `out` is a FlipSketch training run: it holds the marker, or it
    was written before the marker existed (a run.json of kind flipsketch.lora,
    or complete checkpoints)."""
    if (out / RUN_MARKER).is_file() or checkpoints(out):
        return True
    try:
        return json.loads((out / "run.json").read_text(encoding="utf-8")).get("kind") == "flipsketch.lora"
    except (OSError, ValueError, AttributeError):
        return False


def check_owned(out: str | Path) -> Path:
    """`out` must be new, an empty folder, or a training run: training never
    writes into (or deletes from) a folder it does not own. The error does not
    list the folder's entries."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FieldError("out", f"'{out}' is a file, not a folder.", "Choose a new folder for the LoRA.")
    if out.is_dir() and any(out.iterdir()) and not is_run(out):
        raise FieldError(
            "out",
            f"'{out}' is not empty and is not a FlipSketch training run.",
            "Choose a new or empty folder: training writes only into folders of its own.",
        )
    return out


def check_out(out: str | Path, resume: bool, overwrite: bool) -> None:
    """A run's folder may hold an earlier run only when it is resumed or replaced."""
    out = check_owned(out)
    if (checkpoints(out) or (out / ADAPTER_WEIGHTS).exists()) and not (resume or overwrite):
        raise FieldError(
            "out",
            f"'{out}' already holds a LoRA training run.",
            "Pass --resume to continue it, --overwrite to start over, or choose another --out.",
        )


def claim_out(out: str | Path) -> Path:
    """Make `out` a run folder (new, empty or a run already): the marker is written first."""
    out = check_owned(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_MARKER).is_file():
        write_json(out / RUN_MARKER, {"kind": "flipsketch.lora-run", "schema_version": SCHEMA_VERSION})
    return out


def prepare_out(out: str | Path, resume: bool, overwrite: bool) -> Path:
    """Check and claim a run's folder; `overwrite` removes only what a run writes
    (checkpoints, validation animation, adapter, run.json)."""
    check_out(out, resume, overwrite)
    out = claim_out(out)
    if overwrite:
        for step in (out / CHECKPOINTS).glob("step-*"):
            shutil.rmtree(step, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out / CHECKPOINTS).rmdir()  # only when nothing else is in it
        shutil.rmtree(out / VALIDATION, ignore_errors=True)
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, "run.json"):
            (out / name).unlink(missing_ok=True)
    return out
