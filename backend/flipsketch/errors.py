"""Errors a user can act on.

Every failure that reaches a person (CLI, HTTP, Blender) is a FlipSketchError whose
message says what went wrong and whose `hint` says what to do about it, so the
front ends can show them as they are instead of a traceback.
"""

import errno as errno_module
from pathlib import Path


class FlipSketchError(Exception):
    """A problem with a clear cause and a remedy."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class ModelNotFoundError(FlipSketchError):
    """The model weights are neither on disk nor downloadable."""


class ModelCorruptError(FlipSketchError):
    """A model folder exists but a component cannot be loaded from it."""


class InputError(FlipSketchError):
    """A sketch, prompt or parameter that cannot be used."""


class Cancelled(FlipSketchError):
    """The caller cancelled a running job."""


class NonFiniteError(FlipSketchError):
    """The model computed NaN or infinity: damaged weights or an fp16 overflow."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"The model produced NaN/Inf {what}: damaged weights, or an fp16 overflow.",
            "Try --dtype fp32 (in Blender: Precision float32); if that fails too, "
            "the weights are damaged: download or create the model again.",
        )


class StorageError(FlipSketchError):
    """A file could not be written: a full disk, too many open files, no permission."""

    def __init__(self, message: str, hint: str, errno: int | None) -> None:
        super().__init__(message, hint)
        self.errno = errno

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno_module.ENOSPC, errno_module.EDQUOT)


def storage_error(exc: OSError, where: str | Path) -> StorageError:
    """What an OSError while writing under `where` means, and what to do."""
    place = exc.filename or where
    if exc.errno in (errno_module.ENOSPC, errno_module.EDQUOT):
        return StorageError(
            f"The disk is full: could not write '{place}'.",
            f"Free space on the disk that holds '{where}'; jobs run again once there is room.",
            exc.errno,
        )
    if exc.errno in (errno_module.EMFILE, errno_module.ENFILE):
        return StorageError(
            f"Too many open files: could not write '{place}'.",
            "Close other programs or raise the open-file limit (ulimit -n); jobs run again once files are free.",
            exc.errno,
        )
    return StorageError(
        f"Could not write '{place}': {exc.strerror or exc}.", f"Check the permissions of '{where}'.", exc.errno
    )
