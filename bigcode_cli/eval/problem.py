"""One evaluation problem: the text around the completion, the tests, and how to stop generating."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """A prompt (and, for fill-in-the-middle, a suffix) to complete, and the tests that judge the result.

    The program that runs is prompt + completion + suffix + tests. `middle` is the reference
    completion of an infill task (scored by exact match too); `lines` caps a completion's lines.
    """

    task_id: str
    language: str  # a key of executors.EXECUTORS
    prompt: str
    tests: str
    stops: tuple[str, ...] = ()
    suffix: str = ""
    middle: str | None = None
    lines: int | None = None

    @property
    def mode(self) -> Literal["fim", "continue"]:
        """How the model is prompted: fill in the middle (infill tasks) or continue the prompt."""
        return "fim" if self.middle is not None else "continue"

    def trim(self, text: str) -> str:
        """A completion as scored: cut at the first stop sequence and after `lines` lines.

        Applied to every completion, whoever made it, so a server that ignores `stop` is scored alike.
        """
        cut = min((at for at in (text.find(stop) for stop in self.stops) if at >= 0), default=len(text))
        text = text[:cut]
        if self.lines is not None:
            text = "".join(text.splitlines(keepends=True)[: self.lines])
        return text

    def program(self, completion: str) -> str:
        """The source that runs: the completion in its place, then the tests."""
        if self.mode == "fim" and completion and not completion.endswith("\n"):
            completion += "\n"  # the suffix starts a line of its own
        return self.prompt + completion + self.suffix + self.tests

    def exact_match(self, completion: str) -> bool | None:
        """Infill tasks: whether the completion is the masked text (lines compared without trailing
        whitespace, blank lines ignored); None for tasks without a reference middle."""
        if self.middle is None:
            return None
        return _lines(completion) == _lines(self.middle)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]
