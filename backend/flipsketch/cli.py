"""The `flipsketch` command line.

Sub-commands import their heavy modules only when run, so `--help` and
`doctor` answer quickly. Every FlipSketchError becomes a two-line message and
exit code 2; nothing a user can fix ends in a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from flipsketch import __version__
from flipsketch.errors import FlipSketchError


def _doctor(args: argparse.Namespace) -> int:
    from flipsketch.doctor import report, run_checks

    findings = run_checks()
    print(report(findings))
    return 1 if any(f.blocking for f in findings) else 0


def _create_tiny(args: argparse.Namespace) -> int:
    from flipsketch.tiny_model import TINY_NOTICE, create_tiny_model

    folder = create_tiny_model(args.dir, seed=args.seed)
    print(f"Tiny random model written to {folder}\n{TINY_NOTICE}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flipsketch", description="Animate sketches with FlipSketch.")
    parser.add_argument("--version", action="version", version=f"flipsketch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    doctor = commands.add_parser("doctor", help="check Python, torch, GPU and model; exit 1 if generation cannot run")
    doctor.set_defaults(func=_doctor)

    model = commands.add_parser("model", help="manage models")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    tiny = model_commands.add_parser(
        "create-tiny", help="write a tiny random model in the published layout (tests, demo)"
    )
    tiny.add_argument("dir", help="new folder for the model")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_create_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FlipSketchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
