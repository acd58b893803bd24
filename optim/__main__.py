"""Command line: ``python -m optim [--no-limits] [--allow-unsandboxed] [--debug] <command> ...``.

Each command lives in its own ``optim/cli/<name>.py`` module exposing ``register(subparsers)``, which
adds a sub-parser whose ``func(args) -> int`` runs it. Files are loaded by jobs in worker processes with
limits (:mod:`optim.jobs`); ``--no-limits`` runs them in this process (a user's own trusted file) and
``--allow-unsandboxed`` converts TorchScript/.pt2 without bubblewrap. Every failure prints one
``error: ...`` message and exits with status 2 (user error) or 3 (a defect of ours), never a traceback
unless ``--debug`` asks for it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Iterator

from optim import jobs
from optim.errors import OptimError, environment_message

COMMAND_MODULES = ("optim.cli.profile", "optim.cli.sweep", "optim.cli.hardware", "optim.cli.casestudy")
MAX_MESSAGE = 700  # head and tail kept: the advice comes last
_GLOBAL_FLAGS = (
    ("--no-limits", "run jobs in this process without memory/CPU/wall-time limits (your own trusted files)"),
    ("--allow-unsandboxed", "convert TorchScript/.pt2 even without the bubblewrap sandbox (trusted files only)"),
    ("--debug", "print the full traceback of an error"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optim", description="Model Compression Trade-off Explorer")
    for flag, help_ in _GLOBAL_FLAGS:
        parser.add_argument(flag, action="store_true", help=help_)
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    for p in sub.choices.values():  # the same flags after the command name
        for flag, help_ in _GLOBAL_FLAGS:
            p.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_)
    return parser


def _short(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= MAX_MESSAGE else s[:MAX_MESSAGE // 2] + " [...] " + s[-MAX_MESSAGE // 2:]


def _warning(message: object, category: type, filename: str, lineno: int, file: object = None,
             line: object = None) -> None:
    print(f"warning: {_short(message)}", file=sys.stderr)


def _report(err: BaseException, debug: bool) -> int:
    if isinstance(err, OptimError):
        print(f"error: {_short(err)}", file=sys.stderr)
        detail = getattr(err, "detail", "")
        code = 2
    elif (words := environment_message(err)) is not None:  # full disk, damaged store, no permission
        print(f"error: {words}", file=sys.stderr)
        detail, code = "", 2
    elif isinstance(err, MemoryError):
        print("error: this machine ran out of memory. Use a smaller model or less data.", file=sys.stderr)
        detail, code = "", 2
    else:
        print(f"error: internal error ({type(err).__name__}): {_short(err)}. This is a bug; re-run with --debug "
              "for the traceback and please report it.", file=sys.stderr)
        detail, code = "", 3
    if debug:
        traceback.print_exception(err, file=sys.stderr)
        if detail:
            print(f"--- in the job:\n{detail}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _settings(args: argparse.Namespace) -> Iterator[None]:
    """The global flags as environment + executor for this run (restored after: main() may run in-process)."""
    env = {"OPTIM_JOB_LIMITS": "off" if args.no_limits else None,
           "OPTIM_ALLOW_UNSANDBOXED_TORCH": "1" if args.allow_unsandboxed else None}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if v is not None})
    previous = jobs.set_executor(jobs.InlineExecutor()) if args.no_limits else None
    old_show = warnings.showwarning
    warnings.showwarning = _warning
    try:
        yield
    finally:
        warnings.showwarning = old_show
        if args.no_limits:
            jobs.set_executor(previous)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _settings(args):
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - every failure becomes one line (a traceback only with --debug)
            return _report(err, args.debug)


if __name__ == "__main__":
    sys.exit(main())
