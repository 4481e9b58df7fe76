"""One server per jobs folder: an exclusive lock held for the server's life.

Two servers on one folder would each re-run and rewrite the other's jobs. The
lock is an OS file lock (fcntl on POSIX, msvcrt on Windows) on
`<jobs>/.server.lock`, so it is released when the process ends however it
ends (kill -9 included) and never needs cleaning up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from flipsketch.errors import FlipSketchError

if sys.platform == "win32":
    import msvcrt

    def _lock(handle: IO[str]) -> None:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


LOCK_NAME = ".server.lock"


def lock_folder(folder: Path) -> IO[str]:
    """Take the folder's lock, or raise FlipSketchError naming the server that
    holds it. Keep the returned file open for as long as the lock must last."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115  (held for the server's life)
    try:
        handle.seek(0)
        _lock(handle)
    except OSError:
        try:
            handle.seek(0)
            owner = handle.read().strip()
        except OSError:  # Windows: the locked byte cannot be read
            owner = ""
        handle.close()
        raise FlipSketchError(
            f"Another FlipSketch server{f' (pid {owner})' if owner.isdigit() else ''} uses the jobs folder {folder}.",
            "Use that server, stop it first, or give this one its own --jobs folder.",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
