"""Progress events and cancellation shared by the CLI, the service and Blender.

One callback receives every event; the fraction is weighted by the estimated
cost of each stage (UNet frame-passes), so a bar moves evenly, and it never
reaches 1.0 before the results exist (`done`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flipsketch.errors import Cancelled


class CancelToken(threading.Event):
    """Set from any thread to stop a running job at its next check."""

    def cancel(self) -> None:
        self.set()


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # encode | invert | reference | align | denoise | decode | train | done
    step: int  # 1-based step within the stage
    total: int  # steps in the stage
    fraction: float  # overall 0..1, weighted by cost
    eta_s: float | None  # seconds left, None until it can be estimated
    loss: float | None = None  # training jobs: the step's loss


ProgressCallback = Callable[[ProgressEvent], None]


class Progress:
    """Turns stage steps into weighted overall progress; checks cancellation."""

    def __init__(self, callback: ProgressCallback | None, cancel: CancelToken | None, costs: dict[str, float]) -> None:
        self.callback = callback
        self.cancel = cancel
        self.total = max(sum(costs.values()), 1e-9)
        self.completed = 0.0
        self.started = time.perf_counter()

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("The job was cancelled.")

    def advance(self, stage: str, step: int, total: int, cost: float) -> None:
        self.check_cancel()
        self.completed += cost
        fraction = min(self.completed / self.total, 0.99)
        elapsed = time.perf_counter() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        if self.callback:
            self.callback(ProgressEvent(stage, step, total, fraction, eta))

    def skip(self, cost: float) -> None:
        """Work that was planned but will not be done (alignment stopped early)."""
        self.total = max(self.total - cost, self.completed)

    def done(self) -> None:
        if self.callback:
            self.callback(ProgressEvent("done", 1, 1, 1.0, 0.0))
