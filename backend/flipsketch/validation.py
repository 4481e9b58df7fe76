"""The one validation layer for values that come from outside: HTTP bodies,
CLI flags, storyboard and stroke files, job records read back from disk.

- `parse_json` reads a request body strictly: `NaN`/`Infinity` literals,
  numbers that overflow to infinity, strings that are not valid UTF-8 (lone
  surrogates such as "\\ud800") and nesting deeper than `MAX_DEPTH` are
  refused, each naming the field where it was found.
- `number`, `integer`, `text` and `typed_fields` check single fields: type,
  finiteness and documented bounds. The dataclasses (`AnimateParams`,
  `TrainConfig`), the stroke parser and the LoRA list use them, so the CLI and
  the service accept exactly the same values.
- `Roots` confines the paths a request may name (`serve --allow-path`) without
  revealing what exists outside them.

Every problem is a `FieldError` (an `InputError` carrying the field's name).
No torch import: requests are checked before any model is touched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from flipsketch.errors import InputError
from flipsketch.models import ModelSource, is_hub_id, source_from

MAX_DEPTH = 32  # a stroke body is 6 levels deep
MAX_PROMPT = 2000  # characters; CLIP reads 77 tokens, the rest is ignored
MAX_PATH = 4096
MAX_NAME = 256  # model ids, subfolders, revisions


class FieldError(InputError):
    """An input value that cannot be used; `field` names it ("params.guidance")."""

    def __init__(self, field: str | None, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.field = field


class _Refused:
    """A number JSON cannot hold, kept until the walk can name its field."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _parse_float(literal: str) -> float | _Refused:
    value = float(literal)
    return value if math.isfinite(value) else _Refused(literal)


def parse_json(raw: bytes | str, what: str = "The body") -> Any:
    """A request body (or a JSON file: `what` names it) as Python data,
    strictly (see the module docstring).

    Raises FieldError naming the field (or None for the text as a whole)."""
    try:
        data = json.loads(raw, parse_constant=_Refused, parse_float=_parse_float)
    except RecursionError:
        raise FieldError(None, f"{what} is nested deeper than {MAX_DEPTH} levels.", "Send flatter JSON.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FieldError(None, f"{what} is not valid JSON ({exc}).", "Send UTF-8 JSON.") from None
    check_tree(data)
    return data


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_tree(data: Any, path: str = "") -> None:
    """Every string valid UTF-8, every number finite, at most MAX_DEPTH levels;
    FieldError naming the first offending field otherwise."""
    stack: list[tuple[Any, str, int]] = [(data, path, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise FieldError(where or None, f"'{where or 'body'}' is nested deeper than {MAX_DEPTH} levels.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    check_text_encoding(_join(where, "<key>"), key)
                stack.append((item, _join(where, key), depth + 1))
        elif isinstance(value, str):
            check_text_encoding(where, value)
        elif isinstance(value, _Refused) or (isinstance(value, float) and not math.isfinite(value)):
            literal = value.literal if isinstance(value, _Refused) else str(value)
            raise FieldError(
                where or None,
                f"'{where or 'body'}' is {literal}, which is not a finite JSON number.",
                "Send a finite number (JSON has no NaN or Infinity).",
            )


def check_text_encoding(name: str, value: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError(
            name or None,
            f"'{name or 'body'}' holds a character that is not valid UTF-8 (a lone surrogate).",
            "Send valid Unicode text.",
        ) from None


def text(name: str, value: Any, max_length: int, what: str = "Field") -> str:
    """A string of valid UTF-8 of at most `max_length` characters."""
    if not isinstance(value, str):
        raise FieldError(name, f"{what} '{name}' must be a string, not {type(value).__name__}.")
    if len(value) > max_length:
        raise FieldError(name, f"{what} '{name}' is {len(value)} characters long.", f"Use at most {max_length}.")
    check_text_encoding(name, value)
    return value


def number(
    name: str, value: Any, low: float, high: float, what: str = "Parameter", low_open: bool = False, hint: str = ""
) -> float:
    """A finite number in [low, high] ((low, high] with `low_open`); booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(name, f"{what} '{name}' must be a number, not {value!r}.", hint)
    inside = (low < value if low_open else low <= value) and value <= high
    if not (math.isfinite(value) and inside):
        bounds = f"{'above' if low_open else 'from'} {low:g} {'up to' if low_open else 'to'} {high:g}"
        raise FieldError(name, f"{what} '{name}' is {value}.", hint or f"Use a finite number {bounds}.")
    return float(value)


def integer(name: str, value: Any, low: int, high: int, what: str = "Parameter", hint: str = "") -> int:
    """An int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"{what} '{name}' must be an integer, not {value!r}.", hint)
    if not low <= value <= high:
        raise FieldError(name, f"{what} '{name}' is {value}.", hint or f"Use {low} to {high}.")
    return value


def typed_fields(cls: type, data: dict[str, Any], what: str, skip: frozenset[str] | set[str] = frozenset()) -> dict:
    """Constructor arguments for dataclass `cls` from JSON: an unknown name or a
    value of the wrong type is a FieldError naming the field; ints become
    floats where a float is expected. Fields in `skip` pass through unchecked.
    Bounds are the dataclass's own `validate()`."""
    known = {f.name: f.type for f in fields(cls)}
    for name, value in data.items():
        if name not in known:
            raise FieldError(name, f"Unknown {what} '{name}'.", f"Known: {', '.join(known)}.")
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
            raise FieldError(
                name, f"{what.capitalize()} '{name}' must be {expected}, not {value!r}.", "Fix the value's type."
            )
    return {k: float(v) if known[k].replace(" | None", "") == "float" and v is not None else v for k, v in data.items()}


def subfolder(name: str, value: Any) -> str:
    """A relative folder inside a model repository: no '..', not absolute."""
    value = text(name, value, MAX_NAME)
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not value.strip() or PureWindowsPath(value).is_absolute() or value.startswith(("/", "\\")) or ".." in parts:
        raise FieldError(
            name,
            f"'{name}' must be a folder inside the model, not {value!r}.",
            "Use a relative name such as 'checkpoint' (no '..', not absolute).",
        )
    return value


class Roots:
    """The folders a request's paths must lie in (`serve --allow-path`); no
    folders = no confinement (a server for this machine's own user).

    A path outside every root is refused with the same message whether or not
    it exists, so a client cannot probe the server's file system."""

    def __init__(self, folders: Sequence[str | Path] | None = None) -> None:
        self.folders = [Path(f).expanduser().resolve() for f in folders or []]

    def __bool__(self) -> bool:
        return bool(self.folders)

    def inside(self, path: Path) -> bool:
        resolved = path.expanduser().resolve()  # follows symlinks: a link out of a root is outside
        return any(resolved.is_relative_to(root) for root in self.folders)

    def path(self, name: str, value: Any) -> Path:
        """The path a request names, checked against the roots (not for existence)."""
        if value is None:
            raise FieldError(name, f"'{name}' is missing.", "Send a folder path on the server.")
        value = text(name, value, MAX_PATH, "Path")
        if not value.strip() or "\x00" in value:
            raise FieldError(name, f"'{name}' must name a folder on the server.", "Send a folder path on the server.")
        path = Path(value).expanduser()
        if self and not self.inside(path):
            raise FieldError(
                name,
                f"'{name}' is outside the folders this server may use.",
                "Use a path inside one of the server's --allow-path folders.",
            )
        return path


def model_source(body: dict[str, Any], roots: Roots) -> ModelSource | None:
    """The model a request names (`model`, `subfolder`, `revision`), checked
    before the job is queued: a Hugging Face id, or a folder on the server
    (inside `roots`) that holds model_index.json. None: the server's model."""
    name, sub, revision = body.get("model"), body.get("subfolder"), body.get("revision")
    if name is None:
        if sub is not None or revision is not None:
            field = "subfolder" if sub is not None else "revision"
            raise FieldError(field, f"'{field}' is given without 'model'.", "Name the model it belongs to.")
        return None
    name = text("model", name, MAX_PATH)
    sub = subfolder("subfolder", sub) if sub is not None else None
    revision = text("revision", revision, MAX_NAME) if revision is not None else None
    if not name.strip():
        raise FieldError("model", "'model' is empty.", "Send a Hugging Face id or a model folder on the server.")
    path = Path(name).expanduser()
    local = roots.inside(path) if roots else path.is_dir()
    if not (is_hub_id(name) and not local):
        folder = roots.path("model", name)
        if not (folder / (sub or "") / "model_index.json").is_file():
            where = f" (in '{sub}')" if sub else ""
            raise FieldError(
                "model",
                f"'{name}' is not a model folder on the server: no model_index.json{where}.",
                "Send a folder that holds model_index.json, or a Hugging Face id such as owner/name.",
            )
    return source_from(name, sub, revision)
