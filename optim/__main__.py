"""Command line: ``python -m optim <command> ...``.

Each command lives in its own ``optim/cli_<name>.py`` module exposing ``register(subparsers)``, which
adds a sub-parser whose ``func(args) -> int`` runs it. User errors (OptimError) print their message and
exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from optim.errors import OptimError

COMMAND_MODULES = ("optim.cli.profile", "optim.cli.sweep", "optim.cli.hardware", "optim.cli.casestudy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optim", description="Model Compression Trade-off Explorer")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OptimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
