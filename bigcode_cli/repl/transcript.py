"""The session transcript that /save writes: every turn's input and what came back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Turn:
    """One turn: a slash command or a piece of code and the model's answer."""

    mode: str  # "command" for slash commands, else the mode the turn ran in
    input: str
    output: str = ""  # completion / middle, or the rendered classify/tag result
    suffix: str = ""  # infill: the text after <FILL>
    stats: dict = field(default_factory=dict)  # token counts and timings
    interrupted: bool = False


class Transcript:
    """The turns of this session, in order."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []

    def add(self, turn: Turn) -> None:
        """Record a finished (or stopped) turn."""
        self.turns.append(turn)

    def save(self, path: str | Path) -> int:
        """Write the transcript (JSON Lines for .json/.jsonl, else readable text); returns the number of turns."""
        target = Path(path).expanduser()
        if target.suffix in (".json", ".jsonl"):
            text = "".join(json.dumps(asdict(turn), ensure_ascii=False) + "\n" for turn in self.turns)
        else:
            text = "".join(_as_text(i, turn) for i, turn in enumerate(self.turns, 1))
        target.write_text(text, encoding="utf-8")
        return len(self.turns)


def _ended(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _as_text(number: int, turn: Turn) -> str:
    """A turn as text: a comment header, then the code as it reads with the model's part in place."""
    if turn.mode == "command":
        return f"# [{number}] {turn.input.strip()}\n"
    notes = [turn.mode]
    if turn.stats:
        notes.append(f"{turn.stats.get('prompt_tokens', 0)} prompt + {turn.stats.get('new_tokens', 0)} new tokens")
    if turn.interrupted:
        notes.append("stopped")
    header = f"# [{number}] {', '.join(notes)}\n"
    if turn.mode in ("complete", "infill"):
        return header + _ended(turn.input + turn.output + turn.suffix)
    result = "".join(f"# => {line}\n" for line in turn.output.splitlines())
    return header + _ended(turn.input) + result
