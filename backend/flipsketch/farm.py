"""Storyboard shots on a Ray cluster: one actor per GPU (or CPU), model loaded once.

Actors return the generated frames to the driver, which writes them exactly
as a local run does, so no shared filesystem is assumed and the output layout
is the same. Ray is an optional extra (`pip install flipsketch[ray]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flipsketch.board import Generate, Shot
from flipsketch.errors import FlipSketchError
from flipsketch.models import ModelSource


class ShotWorker:
    """Holds one warm model; runs shots on it (a Ray actor)."""

    def __init__(self, source: dict[str, Any], device: str, dtype: str, threads: int | None) -> None:
        import torch

        from flipsketch.models import load_model, pick_dtype

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(ModelSource(**source), dtype=pick_dtype(dtype, device), device=device)

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "source": asdict(m.source),
            "folder": str(m.folder),
            "tiny": m.is_tiny_random,
            "device": str(m.device),
            "dtype": str(m.dtype),
        }

    def run(self, shot: Shot, sketch: Any) -> Any:
        from flipsketch.pipeline import animate

        try:
            return animate(self.model, sketch, shot.params)
        except FlipSketchError as exc:
            return exc


def ray_generator(address: str, source: ModelSource, device: str, dtype: str) -> Generate:
    """A `generate` for board.run_board that spreads shots over Ray actors.

    `address`: "local" starts Ray on this machine, "auto" joins the running
    cluster, anything else is a cluster address."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    capacity = gpus or int(ray.cluster_resources().get("CPU", 1))
    # Any: ray's actor handles type their methods as plain functions (no `.remote`)
    actor_class: Any = (ray.remote(num_gpus=1) if gpus else ray.remote(num_cpus=1))(ShotWorker)

    def generate(work: list[tuple[Shot, Any]]) -> Iterator[tuple[Shot, Any, Any, Any]]:
        if not work:
            return
        actors = [
            actor_class.remote(asdict(source), "cuda" if gpus else device, dtype, None if gpus else 1)
            for _ in range(min(capacity, len(work)))
        ]
        info: dict[str, Any] = ray.get(actors[0].info.remote())
        model = SimpleNamespace(
            source=ModelSource(**info["source"]),
            folder=Path(info["folder"]),
            is_tiny_random=info["tiny"],
            device=info["device"],
            dtype=info["dtype"],
        )
        pending = {actors[i % len(actors)].run.remote(*item): item for i, item in enumerate(work)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            shot, sketch = pending.pop(done[0])
            yield shot, sketch, ray.get(done[0]), model
        for actor in actors:
            ray.kill(actor)

    return generate
