"""`flipsketch ARGS` with a disk that can fail on demand: while the file
`fault-<jobs folder name>` beside the jobs folder holds an errno name (ENOSPC,
EMFILE), every file opened for writing and every folder made inside the jobs
folder fails with that error, as on a full disk or with no file descriptors
left ("ENOSPC files": only files fail). Used by tests/test_service_faults.py (a real tmpfs is not available)."""

import builtins
import errno
import io
import os
import sys
from pathlib import Path

from flipsketch.cli import main

args = sys.argv[1:]
JOBS = Path(args[args.index("--jobs") + 1]).resolve()
FLAG = JOBS.parent / f"fault-{JOBS.name}"
real_open, real_mkdir = builtins.open, os.mkdir


def fault(path: object, folder: bool = False) -> None:
    if isinstance(path, int) or not FLAG.exists():
        return
    name, *scope = FLAG.read_text().split()
    if Path(os.fspath(path)).resolve().is_relative_to(JOBS) and not (folder and scope == ["files"]):
        code = getattr(errno, name)
        raise OSError(code, os.strerror(code), os.fspath(path))


def faulty_open(file, mode="r", *rest, **kwargs):
    if any(flag in mode for flag in "wax+"):
        fault(file)
    return real_open(file, mode, *rest, **kwargs)


def faulty_mkdir(path, mode=0o777, *, dir_fd=None):
    fault(path, folder=True)
    return real_mkdir(path, mode, dir_fd=dir_fd)


builtins.open = io.open = faulty_open
os.mkdir = faulty_mkdir
sys.exit(main(args))
