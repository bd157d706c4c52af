"""The README's set-up: exactly two commands at its top; the first installs the extras a user wants and
leaves `bigcode` on the shell's PATH, as every later example and hint assumes.

The shell part of the first command runs for real in a temporary directory (a real venv, its real
`activate`); only its `pip install` steps stand in for pip, recording what they were asked and putting
a `bigcode` script where pip would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PIP = ".venv/bin/pip install "
FAKE_PIP = ("{{ printf '%s\\n' {args} >> pip.log && printf '#!/bin/sh\\necho ran bigcode \"$@\"\\n' > .venv/bin/bigcode"
            " && chmod +x .venv/bin/bigcode; }}")


def _setup_commands() -> list[str]:
    """The sh blocks before the README's first paragraph (a block may carry the docs test's `<!-- not run -->`)."""
    head = README.split("\n\n" + next(p for p in README.split("\n\n")[1:] if not p.startswith(("```", "<!--"))), 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", head, re.S)


def _first_command_with_fake_pip() -> str:
    steps = []
    for step in _setup_commands()[0].split(" && "):
        if step.startswith(PIP):
            step = FAKE_PIP.format(args=step.removeprefix(PIP))  # the words pip would get, one a line
        elif step.startswith("python3 -m venv "):
            step = step.replace("-m venv ", "-m venv --without-pip ", 1)  # pip itself is not needed here
        steps.append(step)
    return " && ".join(steps)


def test_there_are_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("bigcode complete examples/fib.py") and commands[1].endswith("-m pytest")


def test_the_first_command_leaves_bigcode_on_the_path_with_the_serve_extra(tmp_path):
    (tmp_path / "examples").mkdir()
    tools = tmp_path / "tools"  # python3 outside any venv, and no bigcode anywhere on the PATH
    tools.mkdir()
    (tools / "python3").symlink_to(os.path.realpath(sys.executable))
    path = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "bigcode").exists()]
    env = {"PATH": os.pathsep.join([str(tools), *path]), "HOME": str(tmp_path)}
    script = _first_command_with_fake_pip() + " && command -v bigcode"
    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran, where = done.stdout.splitlines()
    assert ran == "ran bigcode complete examples/fib.py"
    assert Path(where).resolve() == (tmp_path / ".venv" / "bin" / "bigcode").resolve()
    extras = re.findall(r"^\.\[([a-z,]+)\]$", (tmp_path / "pip.log").read_text(), re.M)  # after -e
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras and "serve" in extras[0].split(",") and set(extras[0].split(",")) <= set(defined)
