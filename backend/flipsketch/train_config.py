"""LoRA training options and the layout of a training run's folder.

No torch import: the CLI builds its help from these, and the server checks a
training request with them before it queues the job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipsketch.errors import InputError
from flipsketch.lora import ADAPTER_WEIGHTS
from flipsketch.params import typed_fields

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer.pt"


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
        def bad(name: str, value: Any, fix: str) -> InputError:
            return InputError(f"Training option '{name}' is {value}.", fix)

        if not 1 <= self.rank <= 512:
            raise bad("rank", self.rank, "Use a LoRA rank from 1 to 512 (16 is typical).")
        if self.alpha is not None and self.alpha <= 0:
            raise bad("alpha", self.alpha, "Use a positive alpha, or leave it out to use the rank.")
        if not 0 < self.learning_rate <= 1:
            raise bad("learning_rate", self.learning_rate, "Use a small positive rate such as 1e-4.")
        if self.steps < 1 or self.batch < 1:
            raise bad("steps/batch", f"{self.steps}/{self.batch}", "Use at least 1 step and a batch of 1.")
        if self.resolution % 8 or not 64 <= self.resolution <= 1024:
            raise bad("resolution", self.resolution, "Use a multiple of 8 from 64 to 1024 (256 is the trained size).")
        if not 2 <= self.frames <= 32:
            raise bad("frames", self.frames, "Use 2 to 32 frames per sample (16 is the trained length).")
        if not 0 <= self.caption_dropout < 1:
            raise bad("caption_dropout", self.caption_dropout, "Use a fraction from 0 to below 1.")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise bad("checkpoint_every/keep_checkpoints", self.checkpoint_every, "Use positive numbers.")
        if self.validation_steps < 0:
            raise bad("validation_steps", self.validation_steps, "Use 0 (no validation) or more.")


def checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run's folder, oldest first."""
    return sorted(p for p in (Path(out) / CHECKPOINTS).glob("step-*") if (p / TRAINER_STATE).is_file())


def check_out(out: str | Path, resume: bool, overwrite: bool) -> None:
    """A run's folder may hold an earlier run only when it is resumed or replaced."""
    out = Path(out)
    if (checkpoints(out) or (out / ADAPTER_WEIGHTS).exists()) and not (resume or overwrite):
        raise InputError(
            f"'{out}' already holds a LoRA training run.",
            "Pass --resume to continue it, --overwrite to start over, or choose another --out.",
        )
