"""How a program in each language runs: the file it is written to and the commands (all run in the sandbox)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

from bigcode_cli.errors import BigCodeError, InputError
from bigcode_cli.eval.sandbox import SYSTEM_PATH


class ToolchainError(BigCodeError):
    """A language's compiler or interpreter is not installed."""


@dataclass(frozen=True)
class Executor:
    """A language: its source file, the tools it needs, and the commands that build and run it."""

    language: str
    source: str
    tools: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]  # "{tool}" names a tool of `tools`, resolved to its path
    install: str  # what to install when a tool is missing

    def resolve(self) -> tuple[list[list[str]], list[str]]:
        """The commands with the tools' paths, and the directories to put on the program's PATH."""
        paths = {tool: _find(tool) for tool in self.tools}
        missing = [tool for tool, path in paths.items() if path is None]
        if missing:
            raise ToolchainError(f"{self.language} programs need {' and '.join(missing)}, which is not installed "
                                 f"here: install {self.install}")
        commands = [[paths.get(part.strip("{}"), part) if part.startswith("{") else part for part in command]
                    for command in self.commands]
        return commands, sorted({os.path.dirname(path) for path in paths.values()})  # type: ignore[arg-type]


def _find(tool: str) -> str | None:
    """A tool's real path. The system directories come first: as root, programs run as another user, who
    cannot enter root's home (where pyenv or nvm shims live). Python is this interpreter when not root."""
    if tool == "python3" and os.geteuid() != 0:
        return os.path.realpath(sys.executable)
    found = shutil.which(tool, path=SYSTEM_PATH + ":" + os.environ.get("PATH", ""))
    if found is None and tool == "python3":
        found = sys.executable
    return os.path.realpath(found) if found else None


# the JVM sizes its heap from the machine's memory; a fixed small heap fits the sandbox's address-space limit
_JVM = ("-Xmx512m", "-Xss16m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData")

EXECUTORS: dict[str, Executor] = {
    "python": Executor("python", "program.py", ("python3",), (("{python3}", "-I", "-S", "-B", "program.py"),),
                       "Python 3"),
    "javascript": Executor("javascript", "program.js", ("node",), (("{node}", "program.js"),), "Node.js (node)"),
    "java": Executor("java", "Problem.java", ("javac", "java"),
                     (("{javac}", *(f"-J{flag}" for flag in _JVM), "-nowarn", "Problem.java"),
                      ("{java}", *_JVM, "-ea", "-cp", ".", "Problem")), "a JDK (javac and java)"),
}
# the names MultiPL-E files use for them
ALIASES = {"py": "python", "python": "python", "js": "javascript", "javascript": "javascript", "java": "java"}


def executor(language: str) -> Executor:
    """The executor of a language name (MultiPL-E's short names too)."""
    name = ALIASES.get(language.lower())
    if name is None:
        raise InputError(f"no executor for language {language!r}; bigcode eval runs {', '.join(EXECUTORS)}")
    return EXECUTORS[name]
