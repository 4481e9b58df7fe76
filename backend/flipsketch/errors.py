"""Errors a user can act on.

Every failure that reaches a person (CLI, HTTP, Blender) is a FlipSketchError whose
message says what went wrong and whose `hint` says what to do about it, so the
front ends can show them as they are instead of a traceback.
"""


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
