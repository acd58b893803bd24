"""The README's command lines stay true: every one parses, and the quick ones run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from optim.__main__ import build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"
QUICK = ("hardware devices", "hardware estimate", "profile resnet_digits")


def _commands() -> list[list[str]]:
    lines = re.findall(r"^\.venv/bin/python -m optim (.+?)(?:\s+#.*)?$", README.read_text(), flags=re.M)
    return [shlex.split(line) for line in lines]


def test_readme_lists_each_cli_command() -> None:
    used = {argv[0] for argv in _commands()}
    assert {"profile", "sweep", "casestudy", "hardware"} <= used


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a[:3]))
def test_readme_command_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


@pytest.mark.parametrize("argv", [a for a in _commands() if " ".join(a).startswith(QUICK)],
                         ids=lambda a: " ".join(a[:3]))
def test_readme_quick_command_runs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if argv[0] == "profile":
        argv = [*argv, "--budget", "0.05", "--profile-runs", "2"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()
