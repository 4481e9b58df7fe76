"""Job kinds and states: Python enums that the job rows (properties.py) store
and the runtime (runtime.py) acts on. Imports nothing from the add-on."""

from enum import StrEnum


class JobKind(StrEnum):
    """What a job makes; each kind has its completion handler."""

    ANIMATE = "animate"  # a new clip from a drawing (also each storyboard shot)
    EXTEND = "extend"  # more drawings after a clip's last one, on its layer
    REGENERATE = "regenerate"  # one segment made again, in its place
    TRAIN = "train"  # a sketch-style LoRA (out_dir is its folder)


class JobState(StrEnum):
    """Where a job is; the first five are active (its thread runs)."""

    STARTING = "starting"
    CONNECTING = "connecting"
    QUEUED = "queued"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    IMPORTED = "imported"  # the result is in the scene
    DONE = "done"  # a training run's LoRA is in the list
    FAILED = "failed"
    CANCELLED = "cancelled"
    REPLACED = "replaced"  # a segment that a regeneration replaced


ACTIVE_STATES = frozenset(
    {JobState.STARTING, JobState.CONNECTING, JobState.QUEUED, JobState.RUNNING, JobState.DOWNLOADING}
)
ENDED_STATES = frozenset({JobState.IMPORTED, JobState.DONE, JobState.FAILED, JobState.CANCELLED})


def enum_items(values: type[StrEnum], descriptions: dict[str, str]) -> list[tuple[str, str, str, int]]:
    """EnumProperty items for a Python enum, numbered in declaration order
    (saved files store the number: only append new members)."""
    return [
        (member.value, member.value.capitalize(), descriptions.get(member.value, ""), number)
        for number, member in enumerate(values)
    ]
