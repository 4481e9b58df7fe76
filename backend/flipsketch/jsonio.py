"""Strict JSON for every file the project writes: no NaN or Infinity (which
are not JSON and break other readers), written atomically (a temporary file
beside the target, renamed into place), so a reader never sees half a file and
a full disk leaves the old file whole."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def dumps(data: Any, indent: int | None = None, default: Callable[[Any], Any] | None = None) -> str:
    """JSON text of `data`; ValueError for a NaN or an infinity anywhere in it.
    `default` converts values JSON has no type for (as in `json.dumps`)."""
    return json.dumps(data, indent=indent, allow_nan=False, default=default)


def write_json(
    path: str | Path, data: Any, indent: int | None = 2, default: Callable[[Any], Any] | None = None
) -> None:
    """Write `data` to `path` atomically and strictly.

    Raises ValueError (non-finite number, before anything is written) or
    OSError (disk full, no permission...); either way `path` is unchanged and
    no temporary file is left behind."""
    path = Path(path)
    text = dumps(data, indent, default)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
